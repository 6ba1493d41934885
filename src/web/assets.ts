/**
 * The job page's stylesheet and script, served from /static (the Content-Security-Policy admits
 * no inline code). Plain browser JavaScript, no build step: it polls JSON and updates in place.
 */

export const STYLESHEET = `
:root { color-scheme: light dark; --ok: #2e7d32; --missing: #8d6e63; --failed: #c62828; --unsolved: #ef6c00; --skipped: #78909c; --cancelled: #6a1b9a; --pending: #cfd8dc; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; }
header { display: flex; gap: 1.5em; align-items: baseline; padding: .6em 1.2em; border-bottom: 1px solid #8884; }
header a.brand { font-weight: 700; text-decoration: none; }
main { padding: 1em 1.2em; max-width: 1300px; }
h1 { font-size: 1.35em; margin: .2em 0 .4em; word-break: break-all; }
h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #8883; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: .05em .5em; border-radius: .6em; border: 1px solid currentColor; font-size: .9em; }
.status-Succeeded, .status-Available { color: var(--ok); }
.status-Failed { color: var(--failed); }
.status-PartiallySucceeded, .status-Unsolved { color: var(--unsolved); }
.status-Cancelled { color: var(--cancelled); }
.status-Missing { color: var(--missing); }
.status-Skipped, .status-Empty { color: var(--skipped); }
dl.counts { display: flex; flex-wrap: wrap; gap: .4em 1.6em; margin: .4em 0; }
dl.counts div { display: flex; flex-direction: column; }
dl.counts dt { font-size: .85em; opacity: .8; }
dl.counts dd { margin: 0; font-size: 1.3em; font-variant-numeric: tabular-nums; }
svg.bar { width: 100%; height: 18px; display: block; border-radius: 4px; }
svg.chart { width: 100%; max-width: 700px; height: 140px; display: block; border: 1px solid #8884; }
rect.seg-Available { fill: var(--ok); } rect.seg-Missing { fill: var(--missing); } rect.seg-Failed { fill: var(--failed); }
rect.seg-Unsolved { fill: var(--unsolved); } rect.seg-Skipped { fill: var(--skipped); } rect.seg-Cancelled { fill: var(--cancelled); }
rect.seg-pending { fill: var(--pending); }
polyline.done { fill: none; stroke: var(--ok); stroke-width: 2; }
form.inline { display: inline; }
form.filters { display: flex; flex-wrap: wrap; gap: .8em; align-items: end; margin: .4em 0 .8em; }
form.filters label { display: flex; flex-direction: column; font-size: .9em; }
button { cursor: pointer; }
button.danger { color: var(--failed); }
.actions { display: flex; flex-wrap: wrap; gap: .6em; align-items: center; margin: .6em 0; }
.notice { padding: .6em .9em; border: 1px solid #8886; border-radius: 6px; margin: .6em 0; }
.notice.error { border-color: var(--failed); }
pre { white-space: pre-wrap; word-break: break-word; background: #8881; padding: .6em; border-radius: 6px; max-height: 28em; overflow: auto; }
.muted { opacity: .7; }
.cause { margin-left: 1.2em; border-left: 2px solid #8886; padding-left: .8em; }
`;

export const SCRIPT = `
'use strict';
(function () {
  var STATUSES = ['Available', 'Missing', 'Failed', 'Unsolved', 'Skipped', 'Cancelled'];
  function get(url) {
    return fetch(url, { headers: { accept: 'application/json' }, credentials: 'same-origin' }).then(function (response) {
      if (!response.ok) throw new Error(response.status + ' ' + response.statusText);
      return response;
    });
  }
  function setText(name, value) {
    document.querySelectorAll('[data-field="' + name + '"]').forEach(function (node) { node.textContent = value; });
  }

  // The jobs list: the table body is re-rendered by the server every few seconds.
  var list = document.querySelector('tbody[data-refresh]');
  if (list) {
    setInterval(function () {
      get(list.getAttribute('data-refresh')).then(function (r) { return r.text(); }).then(function (body) { list.innerHTML = body; }).catch(function () {});
    }, 5000);
  }

  // A job: counts, bar, phase and a progress chart (samples since the page opened), every 2 s.
  var job = document.querySelector('[data-job]');
  if (!job) return;
  var url = '/api/jobs/' + encodeURIComponent(job.getAttribute('data-job'));
  var state = job.getAttribute('data-state');
  var round = job.getAttribute('data-round');
  var samples = [];
  function draw(snapshot) {
    var counts = snapshot.counts;
    if (!counts) return;
    var done = 0;
    STATUSES.forEach(function (status) { done += counts[status] || 0; setText('count-' + status, String(counts[status] || 0)); });
    setText('count-outputs', String(counts.outputs));
    setText('count-items', String(counts.items));
    var x = 0;
    STATUSES.forEach(function (status) {
      var rect = document.querySelector('rect.seg-' + status);
      var width = counts.outputs > 0 ? (100 * (counts[status] || 0)) / counts.outputs : 0;
      if (rect) { rect.setAttribute('x', x + '%'); rect.setAttribute('width', width + '%'); }
      x += width;
    });
    var now = Date.now();
    samples.push({ t: now, done: done });
    while (samples.length > 2 && now - samples[0].t > 10 * 60 * 1000) samples.shift();
    var recent = samples.filter(function (s) { return now - s.t <= 30000; });
    var first = recent[0] || samples[0];
    var rate = first && now > first.t ? ((done - first.done) * 1000) / (now - first.t) : 0;
    setText('rate', rate > 0 ? rate.toFixed(rate < 10 ? 1 : 0) + ' outputs/s' : '–');
    var left = counts.outputs - done;
    setText('eta', snapshot.open && rate > 0 && left > 0 ? Math.ceil(left / rate) + ' s' : '–');
    var line = document.querySelector('polyline.done');
    if (line && samples.length > 1 && counts.outputs > 0) {
      var t0 = samples[0].t, span = Math.max(1, now - t0);
      line.setAttribute('points', samples.map(function (s) { return ((100 * (s.t - t0)) / span).toFixed(2) + ',' + (100 - (100 * s.done) / counts.outputs).toFixed(2); }).join(' '));
    }
  }
  function tick() {
    get(url).then(function (r) { return r.json(); }).then(function (snapshot) {
      setText('phase', snapshot.phase || '');
      setText('in-flight', String(snapshot.inFlight === undefined ? '' : snapshot.inFlight));
      draw(snapshot);
      // A round that settles, a new round, or a job that closes brings new sections: render them.
      if (snapshot.state !== state || String(snapshot.round) !== round) location.reload();
    }).catch(function () {});
  }
  tick();
  setInterval(tick, 2000);
})();
`;
