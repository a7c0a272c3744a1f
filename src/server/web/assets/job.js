// A job's page: its status, its events followed live (output, steps, sandboxes, artifacts,
// the result), and a cancel button.
//
// The events come from GET /v1/jobs/{id}/events?from=N read with fetch() and a streaming
// reader, one JSON object per line. Each carries its offset (`seq`); after a dropped
// connection the page asks again from the next offset, so nothing is shown twice or missed.
import {
  api, el, errorText, fmtBytes, fmtDuration, fmtTime, plainText, requireSession, setBadge, setText,
  showError, SignedOut, sleep,
} from '/assets/common.js';

const id = decodeURIComponent(location.pathname.replace(/^\/jobs\//, ''));
const jobPath = `/v1/jobs/${encodeURIComponent(id)}`;
let finished = false;

// The output pane keeps the last OUTPUT_CAP characters (and at most NODE_CAP text runs), so
// a job writing its whole 64 MiB output cap does not take the tab down; how much was left
// out is said above it.
const OUTPUT_CAP = 1 << 20;
const NODE_CAP = 5000;
const RUN_MAX = 1 << 16;

class Output {
  constructor() {
    this.pre = document.getElementById('output');
    this.size = 0;
    this.dropped = 0;
  }

  atBottom() {
    const p = this.pre;
    return p.scrollHeight - p.scrollTop - p.clientHeight < 24;
  }

  add(kind, raw) {
    const text = plainText(raw);
    if (!text) return;
    const follow = this.atBottom();
    const last = this.pre.lastChild;
    if (last && last.dataset.kind === kind && last.firstChild.length < RUN_MAX) {
      last.firstChild.appendData(text);
    } else {
      const span = el('span', { class: kind }, text);
      span.dataset.kind = kind;
      this.pre.append(span);
    }
    this.size += text.length;
    this.trim();
    if (follow) this.pre.scrollTop = this.pre.scrollHeight;
  }

  marker(text) {
    const nl = this.pre.lastChild && !this.pre.lastChild.textContent.endsWith('\n') ? '\n' : '';
    this.add('marker', `${nl}── ${text} ──\n`);
  }

  trim() {
    while ((this.size > OUTPUT_CAP || this.pre.childNodes.length > NODE_CAP) && this.pre.firstChild) {
      const first = this.pre.firstChild;
      const len = first.firstChild.length;
      const excess = this.size - OUTPUT_CAP;
      if (this.pre.childNodes.length > NODE_CAP || len <= excess) {
        first.remove();
        this.size -= len;
        this.dropped += len;
      } else {
        first.firstChild.deleteData(0, excess);
        this.size -= excess;
        this.dropped += excess;
      }
    }
    if (this.dropped > 0) {
      const note = document.getElementById('omitted');
      note.textContent = `The first ${this.dropped.toLocaleString()} characters of output are not shown: this page keeps the last ${(OUTPUT_CAP / 1024).toLocaleString()} Ki characters. \`cordon logs ${id}\` prints all of it.`;
      note.hidden = false;
    }
  }
}

const output = new Output();

function fact(dl, term, value) {
  dl.append(el('dt', {}, term), el('dd', {}, value ?? '—'));
}

function showStatus(st) {
  document.title = `cordon — ${st.id}`;
  setText('title', st.id);
  setBadge('state', 's', st.state);
  setBadge('outcome', 'o', st.outcome);
  const facts = document.getElementById('facts');
  facts.replaceChildren();
  fact(facts, 'image', st.image);
  if (st.submitted_by) fact(facts, 'submitted by', st.submitted_by);
  fact(facts, 'submitted', fmtTime(st.submitted_ms));
  if (st.queue_position !== undefined) fact(facts, 'queue', `#${st.queue_position + 1} in line`);
  fact(facts, 'started', fmtTime(st.started_ms));
  fact(facts, 'finished', fmtTime(st.finished_ms));
  if (st.started_ms) {
    const end = st.finished_ms ?? Date.now();
    fact(facts, 'duration', fmtDuration(end - st.started_ms) + (st.finished_ms ? '' : '+'));
  }
  document.getElementById('cancel').hidden = st.state === 'finished';
  if (st.result) showResult(st.result);
}

// --- steps -------------------------------------------------------------------------------

const stepRows = new Map();
function stepRow(name) {
  let r = stepRows.get(name);
  if (!r) {
    r = {
      tr: el('tr'), outcome: el('td', {}, 'pending'), exit: el('td', {}, '—'),
      duration: el('td', {}, '—'), bytes: el('td', {}, '—'),
    };
    r.tr.append(el('td', { class: 'mono' }, name), r.outcome, r.exit, r.duration, r.bytes);
    document.getElementById('steps').append(r.tr);
    stepRows.set(name, r);
  }
  return r;
}

function stepFinished(s) {
  const r = stepRow(s.name);
  r.outcome.replaceChildren(el('span', { class: `badge o-${/^[a-z_]+$/.test(s.outcome) ? s.outcome : 'x'}` }, s.outcome));
  r.exit.textContent = s.exit_code ?? '—';
  r.duration.textContent = fmtDuration(s.duration_ms);
  r.bytes.textContent = fmtBytes(s.output_bytes);
}

// --- the sandbox, as the engine recorded it ------------------------------------------------

function limit(v, fmt) {
  return v === null || v === undefined ? 'no limit' : fmt(v);
}

function list(items) {
  if (!items || items.length === 0) return 'none';
  return el('ul', {}, ...items.map((i) => el('li', { class: 'mono' }, i)));
}

function showSandbox(step, a) {
  document.getElementById('no-sandbox').hidden = true;
  const memory = limit(a.memory_bytes, fmtBytes);
  const swap = a.memory_swap_bytes === null || a.memory_swap_bytes === undefined ? 'no limit'
    : a.memory_swap_bytes === a.memory_bytes ? 'none' : fmtBytes(a.memory_swap_bytes - (a.memory_bytes || 0));
  const rows = [
    ['runtime', a.runtime],
    ['user', a.user],
    ['network', a.network],
    ['root filesystem', a.read_only_rootfs ? 'read-only' : 'writable'],
    ['capabilities dropped', a.cap_drop.length ? a.cap_drop.join(', ') : 'none'],
    ['capabilities added', a.cap_add.length ? a.cap_add.join(', ') : 'none'],
    ['no-new-privileges', a.no_new_privileges ? 'yes' : 'no'],
    ['seccomp', a.seccomp],
    ['memory', memory],
    ['swap', swap],
    ['cpus', limit(a.cpus, String)],
    ['pids', limit(a.pids, String)],
    ['open files', limit(a.nofile, String)],
    ['mounts', list(a.mounts)],
  ];
  const table = el('table', {}, el('tbody', {}, ...rows.map(([k, v]) => {
    const tr = el('tr', {}, el('th', {}, k), el('td', { class: 'mono' }, v));
    tr.dataset.field = k;
    return tr;
  })));
  const box = el('div', { class: 'sandbox' }, el('h3', {}, step), table);
  box.dataset.step = step;
  document.getElementById('sandboxes').append(box);
}

// --- artifacts -----------------------------------------------------------------------------

const artifactPaths = new Set();
function artifactHref(path) {
  return `${jobPath}/artifacts/${path.split('/').map(encodeURIComponent).join('/')}`;
}

function addArtifact(path, bytes) {
  if (artifactPaths.has(path)) return;
  artifactPaths.add(path);
  document.getElementById('no-artifacts').hidden = true;
  const name = path.split('/').pop() || 'artifact';
  const a = el('a', { href: artifactHref(path), download: name, rel: 'noopener' }, path);
  document.getElementById('artifacts').append(el('li', {}, a, el('span', { class: 'size' }, fmtBytes(bytes))));
}

async function loadArtifacts() {
  const r = await api('GET', `${jobPath}/artifacts`);
  if (!r.ok) return;
  const body = await r.json();
  for (const a of body.artifacts) addArtifact(a.path, a.bytes);
}

// --- result --------------------------------------------------------------------------------

function showResult(res) {
  document.getElementById('result-section').hidden = false;
  const dl = document.getElementById('result');
  dl.replaceChildren();
  fact(dl, 'outcome', res.outcome);
  fact(dl, 'exit code', res.exit_code ?? '—');
  fact(dl, 'duration', fmtDuration(res.duration_ms));
  if (res.error) fact(dl, 'error', res.error);
  if (res.tests) {
    const t = res.tests;
    fact(dl, 'tests', `${t.passed} passed, ${t.failed} failed, ${t.skipped} skipped, ${t.errors} errors (${t.total} total)`);
  }
  fact(dl, 'output', `${fmtBytes(res.output_bytes)}${res.output_truncated ? ' (cut at the output cap)' : ''}`);
  for (const r of res.artifacts_refused || []) note('warning', `artifact ${r.path} refused: ${r.reason}`);
  const failing = (res.tests && res.tests.failing) || [];
  document.getElementById('failing-box').hidden = failing.length === 0;
  document.getElementById('failing').replaceChildren(...failing.map((f) => el('li', {}, f)));
  for (const s of res.steps || []) stepFinished(s);
}

function note(kind, text) {
  document.getElementById('notes').append(el('li', { class: kind }, text));
}

// --- events --------------------------------------------------------------------------------

function handle(ev) {
  switch (ev.type) {
    case 'started':
      for (const s of ev.steps) stepRow(s);
      break;
    case 'step_started':
      stepRow(ev.step).outcome.textContent = 'running';
      output.marker(`step ${ev.step}`);
      break;
    case 'output':
      output.add(ev.stream === 'stderr' ? 'stderr' : 'stdout', ev.data);
      break;
    case 'output_truncated':
      note('warning', `output past ${fmtBytes(ev.limit_bytes)} was cut in step ${ev.step}; the job is being stopped`);
      break;
    case 'step_finished':
      stepFinished(ev.result);
      break;
    case 'sandbox':
      showSandbox(ev.step, ev.applied);
      break;
    case 'artifact':
      // The event names the file where the service keeps it; the list (with the paths the
      // download links take) is read once the job has ended.
      break;
    case 'artifact_refused':
      note('warning', `artifact ${ev.path} refused: ${ev.reason}`);
      break;
    case 'environment':
      note('info', `environment ${ev.cached ? 'reused' : 'built'}: ${ev.image}`);
      break;
    case 'egress_refused':
      note('warning', `prepare: ${ev.destination} refused (${ev.reason})`);
      break;
    case 'progress':
      note('info', ev.message);
      break;
    case 'warning':
      note('warning', ev.message);
      break;
    case 'finished':
      finished = true;
      showResult(ev.result);
      break;
    default:
      break;
  }
}

// Follows the event stream to its end, resuming from the next offset after a drop.
async function follow() {
  let next = 0;
  let failures = 0;
  while (!finished) {
    try {
      setText('stream-state', failures ? 'reconnecting…' : 'live');
      const r = await api('GET', `${jobPath}/events?from=${next}`);
      if (!r.ok) throw new Error(await errorText(r));
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line.trim()) continue;
          const ev = JSON.parse(line);
          if (ev.seq < next) continue;
          next = ev.seq + 1;
          failures = 0;
          handle(ev);
        }
      }
    } catch (e) {
      if (e instanceof SignedOut) return;
      failures += 1;
      setText('stream-state', `disconnected (${e.message}); reconnecting…`);
    }
    if (!finished) await sleep(Math.min(500 * 2 ** failures, 10000));
  }
  setText('stream-state', '');
  await refreshStatus();
  await loadArtifacts();
}

async function refreshStatus() {
  const r = await api('GET', jobPath);
  if (r.status === 404) {
    showError(`no job ${id} (or not one this token may see)`);
    finished = true;
    return null;
  }
  if (!r.ok) throw new Error(await errorText(r));
  const st = await r.json();
  showStatus(st);
  return st;
}

// The status (state, queue position, times) is read again every two seconds until the job
// ends; the stream carries everything else.
async function watchStatus() {
  while (!finished) {
    try {
      await refreshStatus();
    } catch (e) {
      if (e instanceof SignedOut) return;
    }
    await sleep(2000);
  }
}

async function cancel() {
  const b = document.getElementById('cancel');
  b.disabled = true;
  b.textContent = 'Cancelling…';
  try {
    const r = await api('DELETE', jobPath);
    if (!r.ok) {
      showError(`cancel failed: ${await errorText(r)}`);
    } else {
      showStatus(await r.json());
    }
  } catch (e) {
    if (!(e instanceof SignedOut)) showError(`cancel failed: ${e.message}`);
  } finally {
    b.disabled = false;
    b.textContent = 'Cancel job';
  }
}

async function main() {
  try {
    await requireSession();
    const st = await refreshStatus();
    if (!st) return;
  } catch (e) {
    if (!(e instanceof SignedOut)) showError(`cannot reach the service: ${e.message}`);
    return;
  }
  document.getElementById('cancel').addEventListener('click', cancel);
  watchStatus();
  follow();
}

main();
