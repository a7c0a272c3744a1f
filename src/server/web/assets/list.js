// The job list: polls GET /v1/jobs every two seconds while the tab is visible (and at once
// when it becomes visible again). Polling, not a stream: the list is one small request, a
// poll needs nothing of the service, and it recovers from a restart by itself.
import {
  api, badge, el, errorText, fmtDuration, fmtTime, jobHref, requireSession, setText, SignedOut, sleep,
} from '/assets/common.js';

const POLL_MS = 2000;
const PAGE = 50;
let limit = PAGE;
let wake = null;

function row(job) {
  const end = job.finished_ms ?? (job.started_ms ? Date.now() : null);
  const duration = job.started_ms ? fmtDuration(end - job.started_ms) + (job.finished_ms ? '' : '+') : '—';
  return el('tr', { 'data-id': job.id },
    el('td', { class: 'mono' }, el('a', { href: jobHref(job.id) }, job.id)),
    el('td', {}, badge('s', job.state),
      job.queue_position !== undefined ? ` #${job.queue_position + 1} in line` : null),
    el('td', {}, job.outcome ? badge('o', job.outcome) : '—'),
    el('td', { class: 'mono' }, job.image),
    el('td', {}, job.submitted_by ?? '—'),
    el('td', {}, fmtTime(job.submitted_ms)),
    el('td', {}, duration));
}

async function refresh() {
  const q = new URLSearchParams({ limit: String(limit) });
  const state = document.getElementById('state').value;
  if (state) q.set('state', state);
  const r = await api('GET', `/v1/jobs?${q}`);
  if (!r.ok) throw new Error(await errorText(r));
  const page = await r.json();
  document.getElementById('jobs').replaceChildren(...page.jobs.map(row));
  document.getElementById('empty').hidden = page.jobs.length > 0;
  document.getElementById('more').hidden = !page.next_cursor || limit >= 500;
  setText('live', `live · updated ${new Date().toLocaleTimeString()}`);
}

async function poll() {
  for (;;) {
    if (!document.hidden) {
      try {
        await refresh();
      } catch (e) {
        if (e instanceof SignedOut) return;
        setText('live', `cannot update: ${e.message} (retrying)`);
      }
    }
    await new Promise((resolve) => {
      wake = resolve;
      sleep(POLL_MS).then(resolve);
    });
  }
}

function now() {
  if (wake) wake();
}

async function main() {
  try {
    await requireSession();
  } catch (e) {
    if (!(e instanceof SignedOut)) setText('live', `cannot reach the service: ${e.message}`);
    return;
  }
  document.getElementById('state').addEventListener('change', now);
  document.addEventListener('visibilitychange', now);
  document.getElementById('more').addEventListener('click', () => {
    limit = Math.min(limit + PAGE, 500);
    now();
  });
  poll();
}

main();
