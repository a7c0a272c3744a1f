// The sign-in page: the token goes once, in a JSON body, to POST /web/session; the answer
// sets an HttpOnly session cookie. The token is never put in a URL or kept by the page.
import { errorText } from '/assets/common.js';

const form = document.getElementById('sign-in');
const input = document.getElementById('token');
const error = document.getElementById('error');

// Only a path of this service: never another origin (`//host`, `/\host`).
function nextPage() {
  const next = sessionStorage.getItem('cordon.next') || '/';
  sessionStorage.removeItem('cordon.next');
  return /^\/(?![\/\\])/.test(next) ? next : '/';
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  error.hidden = true;
  const token = input.value.trim();
  if (!token) return;
  const go = document.getElementById('go');
  go.disabled = true;
  try {
    const r = await fetch('/web/session', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token }),
      cache: 'no-store',
    });
    if (!r.ok) {
      error.textContent = await errorText(r);
      error.hidden = false;
      return;
    }
    input.value = '';
    location.replace(nextPage());
  } catch (e) {
    error.textContent = `cannot reach the service: ${e.message}`;
    error.hidden = false;
  } finally {
    go.disabled = false;
  }
});
