/** The web app's pages, rendered on the server from a client's snapshot of a job. */
import type { JobListEntry, JobSnapshot } from '../client';
import { type ErrorReport, type JobResult, type OutputRecord, OutputStatuses, JobStatuses, UNBOUNDED_CONCURRENCY } from '../shared';
import { type Html, html, query } from './html';

export interface PageContext {
  csrf: string;
  /** The Temporal Web UI's base URL, for links to the same workflow there. */
  temporalUi?: string;
  namespace: string;
}

export const PAGE_SIZE = 50;

function layout(title: string, context: PageContext, body: Html): string {
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${title} · Faultline</title>
        <link rel="stylesheet" href="/static/app.css" />
        <script src="/static/app.js" defer></script>
      </head>
      <body>
        <header>
          <a class="brand" href="/">Faultline</a><a href="/">Jobs</a>${context.temporalUi ? html`<a href="${context.temporalUi}/namespaces/${context.namespace}/workflows">Temporal Web UI</a>` : ''}
        </header>
        <main>${body}</main>
      </body>
    </html>`.text;
}

function temporalLink(context: PageContext, jobId: string): Html | string {
  return context.temporalUi ? html`<a href="${context.temporalUi}/namespaces/${context.namespace}/workflows/${encodeURIComponent(jobId)}">in Temporal Web UI</a>` : '';
}

const jobHref = (jobId: string, params: Record<string, string | number | undefined> = {}) => `/jobs/${encodeURIComponent(jobId)}${query(params)}`;

export interface ListParams {
  status?: string;
  pipeline?: string;
  tenant?: string;
  hasErrors?: boolean;
  flagged?: boolean;
  q?: string;
}

export function jobRows(jobs: JobListEntry[], context: PageContext): Html {
  if (jobs.length === 0)
    return html`<tr>
      <td colspan="8" class="muted">No jobs match.</td>
    </tr>`;
  return html`${jobs.map(
    (job) =>
      html`<tr>
        <td><a href="${jobHref(job.jobId)}">${job.jobId}</a></td>
        <td>${job.pipeline ?? ''}</td>
        <td>${job.tenant !== null && job.tenant !== job.jobId ? job.tenant : ''}${job.priority !== null && job.priority !== 3 ? html` <span class="muted">p${job.priority}</span>` : ''}</td>
        <td><span class="badge status-${job.status ?? ''}">${job.status ?? 'unknown'}</span></td>
        <td class="num">${job.failedCount ?? ''}</td>
        <td>${job.flagged ? 'flagged' : ''}</td>
        <td>${job.startedAt.replace('T', ' ').slice(0, 19)}</td>
        <td>${temporalLink(context, job.jobId)}</td>
      </tr>`,
  )}`;
}

export function jobsPage(jobs: JobListEntry[], params: ListParams, context: PageContext, notice?: Html): string {
  const statuses = ['Running', 'Paused', ...JobStatuses];
  const refresh = `/fragments/jobs${query({ status: params.status, pipeline: params.pipeline, tenant: params.tenant, hasErrors: params.hasErrors ? 'true' : undefined, flagged: params.flagged ? 'true' : undefined, q: params.q })}`;
  return layout(
    'Jobs',
    context,
    html`<h1>Jobs</h1>
      ${notice ?? ''}
      <form class="filters" method="get" action="/" role="search" aria-label="Filter jobs">
        <label
          >Status
          <select name="status">
            ${choices(statuses, params.status)}
          </select></label
        >
        <label>Pipeline <input name="pipeline" value="${params.pipeline ?? ''}" size="14" /></label>
        <label>Tenant <input name="tenant" value="${params.tenant ?? ''}" size="12" /></label>
        <label>Job id contains <input name="q" value="${params.q ?? ''}" size="18" /></label>
        <label
          ><span><input type="checkbox" name="hasErrors" value="true" ${params.hasErrors ? html` checked` : ''} /> has errors</span></label
        >
        <label
          ><span><input type="checkbox" name="flagged" value="true" ${params.flagged ? html` checked` : ''} /> flagged</span></label
        >
        <button type="submit">Filter</button>
      </form>
      <table aria-label="Jobs">
        <thead>
          <tr>
            <th>Job</th>
            <th>Pipeline</th>
            <th>Tenant</th>
            <th>Status</th>
            <th class="num">Failed</th>
            <th>Flag</th>
            <th>Started (UTC)</th>
            <th></th>
          </tr>
        </thead>
        <tbody data-refresh="${refresh}">
          ${jobRows(jobs, context)}
        </tbody>
      </table>`,
  );
}

/** What the page's script polls: the numbers that change while a job runs. */
export function liveState(snapshot: JobSnapshot): Record<string, unknown> {
  const progress = snapshot.progress;
  const settledThisRound = snapshot.result !== undefined && (!progress || progress.round === snapshot.result.round) && progress?.phase !== 'running' && progress?.phase !== 'paused';
  return {
    open: snapshot.open,
    state: !snapshot.open ? 'closed' : settledThisRound ? 'settled' : 'running',
    round: progress?.round ?? snapshot.result?.round ?? 0,
    phase: phaseText(snapshot),
    inFlight: progress?.inFlight,
    counts: progress?.counts ?? snapshot.result?.counts,
  };
}

function phaseText(snapshot: JobSnapshot): string {
  if (!snapshot.open) return `closed (${snapshot.execution.toLowerCase()})`;
  const progress = snapshot.progress;
  if (!progress) return 'running (no worker answers queries right now)';
  if (progress.phase === 'retry-window' && progress.retryWindowEndsAt) return `in retry window until ${progress.retryWindowEndsAt.replace('T', ' ').slice(0, 19)} UTC`;
  return progress.paused ? 'paused' : progress.phase;
}

function csrfField(context: PageContext): Html {
  return html`<input type="hidden" name="csrf" value="${context.csrf}" />`;
}

/** An action's form fields: its CSRF token and what the action needs. */
function hiddenFields(context: PageContext, fields: Record<string, string>): Html {
  return html`${csrfField(context)}${Object.entries(fields).map(([name, value]) => html`<input type="hidden" name="${name}" value="${value}" />`)}`;
}

/** A filter's options: "any", then each value (the chosen one selected). */
function choices(values: readonly string[], chosen: string | undefined): Html {
  return html`<option value="">any</option>
    ${values.map((value) => html`<option${chosen === value ? html` selected` : ''}>${value}</option>`)}`;
}

/** A POST form for one action; the server answers it with a confirmation page first. */
function actionForm(context: PageContext, jobId: string, action: string, label: string, fields: Record<string, string> = {}, danger = false): Html {
  return html`<form class="inline" method="post" action="${jobHref(jobId)}/actions/${action}">
    ${hiddenFields(context, fields)}<button type="submit" ${danger ? html` class="danger"` : ''}>${label}</button>
  </form>`;
}

function countsSection(counts: JobResult['counts'] | undefined): Html {
  if (!counts) return html`<p class="muted">No counts yet.</p>`;
  let x = 0;
  const segments = OutputStatuses.map((status) => {
    const width = counts.outputs > 0 ? (100 * counts[status]) / counts.outputs : 0;
    const segment = html`<rect class="seg-${status}" x="${x}%" y="0" width="${width}%" height="100%"><title>${status}</title></rect>`;
    x += width;
    return segment;
  });
  return html`<dl class="counts" aria-label="Counts by status">
      <div>
        <dt>Items</dt>
        <dd data-field="count-items">${counts.items}</dd>
      </div>
      <div>
        <dt>Outputs</dt>
        <dd data-field="count-outputs">${counts.outputs}</dd>
      </div>
      ${OutputStatuses.map(
        (status) =>
          html`<div>
            <dt class="status-${status}">${status}</dt>
            <dd data-field="count-${status}">${counts[status]}</dd>
          </div>`,
      )}
    </dl>
    <svg class="bar" role="img" aria-label="Outputs by status" preserveAspectRatio="none">
      <rect class="seg-pending" x="0" y="0" width="100%" height="100%"></rect>
      ${segments}
    </svg>`;
}

function failureGroups(jobId: string, result: JobResult, context: PageContext, canRetry: boolean): Html {
  const types = Object.entries(result.failureCounts).sort((a, b) => b[1] - a[1]);
  if (types.length === 0) return html`<p class="muted">No failures.</p>`;
  const example = (type: string): ErrorReport | undefined => result.errors.find((report) => report.type === type);
  return html`<table aria-label="Failures by error type">
    <thead>
      <tr>
        <th>Error type</th>
        <th class="num">Items</th>
        <th>Class</th>
        <th>Step</th>
        <th>Example</th>
        <th></th>
      </tr>
    </thead>
    <tbody>
      ${types.map(([type, count]) => {
        const report = example(type);
        return html`<tr>
          <td><a href="${jobHref(jobId, { type })}#items">${type}</a></td>
          <td class="num">${count}</td>
          <td>${report?.class ?? ''}</td>
          <td>${report?.step ?? ''}</td>
          <td>${report ? html`${report.message}${report.item ? html` <span class="muted">(item ${report.item})</span>` : ''}` : ''}</td>
          <td>${canRetry && result.retryable.types.includes(type) ? actionForm(context, jobId, 'retry', `Retry ${type}`, { type }) : ''}</td>
        </tr>`;
      })}
    </tbody>
  </table>`;
}

export interface ItemPage {
  records: OutputRecord[];
  page: number;
  hasNext: boolean;
  status?: string;
  type?: string;
}

function itemBrowser(jobId: string, result: JobResult | undefined, items: ItemPage | undefined): Html {
  if (!result || !items) return html`<p class="muted">Items are listed once a round has settled.</p>`;
  const types = Object.keys(result.failureCounts);
  return html`<form class="filters" method="get" action="${jobHref(jobId)}#items" aria-label="Filter items">
      <label
        >Status
        <select name="status">
          ${choices(OutputStatuses, items.status)}
        </select></label
      >
      <label
        >Error type
        <select name="type">
          ${choices(types, items.type)}
        </select></label
      >
      <button type="submit">Show items</button>
    </form>
    <table aria-label="Items">
      <thead>
        <tr>
          <th>Item</th>
          <th>Output</th>
          <th>Status</th>
          <th>Error type</th>
          <th>Message or location</th>
        </tr>
      </thead>
      <tbody>
        ${
          items.records.length === 0
            ? html`<tr>
                <td colspan="5" class="muted">No items match.</td>
              </tr>`
            : items.records.map(
                (record) =>
                  html`<tr>
                    <td><a href="${jobHref(jobId)}/items/${encodeURIComponent(record.item)}">${record.item}</a></td>
                    <td>${record.output}</td>
                    <td><span class="status-${record.status}">${record.status}</span></td>
                    <td>${record.error?.type ?? ''}</td>
                    <td>${record.error?.message ?? record.reason ?? record.location ?? ''}</td>
                  </tr>`,
              )
        }
      </tbody>
    </table>
    <nav class="actions" aria-label="Item pages">
      ${items.page > 1 ? html`<a href="${jobHref(jobId, { status: items.status, type: items.type, page: items.page - 1 })}#items">Previous page</a>` : ''}
      <span class="muted">page ${items.page}</span>
      ${items.hasNext ? html`<a href="${jobHref(jobId, { status: items.status, type: items.type, page: items.page + 1 })}#items">Next page</a>` : ''}
    </nav>`;
}

export function jobPage(snapshot: JobSnapshot, spec: { head: Record<string, unknown>; itemCount?: number; itemsFrom?: string } | undefined, items: ItemPage | undefined, context: PageContext): string {
  const { jobId, result, progress } = snapshot;
  const live = liveState(snapshot);
  const status = !snapshot.open || live.state === 'settled' ? (result?.status ?? snapshot.execution) : progress?.paused ? 'Paused' : 'Running';
  const limits = progress?.limits;
  const canRetry = result !== undefined && result.retryable.items > 0;
  const round = progress?.round ?? result?.round ?? 1;
  return layout(
    jobId,
    context,
    html`<section data-job="${jobId}" data-state="${String(live.state)}" data-round="${String(live.round)}" aria-label="Job">
      <h1>${jobId}</h1>
      <p>
        <span class="badge status-${status}" data-field="status">${status}</span> · pipeline
        <strong>${snapshot.pipeline ?? result?.pipeline ?? ''}</strong>${result?.pipelineVersion ? ` v${result.pipelineVersion}` : ''} · round <strong>${round}</strong> · phase
        <strong data-field="phase">${String(live.phase)}</strong>${snapshot.open ? html` · in flight <strong data-field="in-flight">${progress?.inFlight ?? ''}</strong>` : ''} · started
        ${snapshot.startedAt.replace('T', ' ').slice(0, 19)} UTC ${temporalLink(context, jobId)}
      </p>
      ${progress?.scheduling ? html`<p class="muted">priority ${progress.scheduling.priority ?? 3} · tenant ${progress.scheduling.tenant ?? jobId} · weight ${progress.scheduling.weight ?? 1}</p>` : ''}
      ${result?.stoppedBy ? html`<p class="notice error">Stopped by <strong>${result.stoppedBy.type}</strong>: ${result.stoppedBy.message}</p>` : ''}
      ${result?.cancelReason ? html`<p class="notice">Cancelled: ${result.cancelReason}</p>` : ''}
      <div class="actions" aria-label="Job actions">
        ${canRetry ? actionForm(context, jobId, 'retry', `Retry all failed (${result.retryable.items})`) : ''}
        ${snapshot.open && progress && !progress.paused && (progress.phase === 'running' || progress.phase === 'validating') ? actionForm(context, jobId, 'pause', 'Pause') : ''}
        ${snapshot.open && progress?.paused ? actionForm(context, jobId, 'resume', 'Resume') : ''} ${snapshot.open ? actionForm(context, jobId, 'cancel', 'Cancel job', {}, true) : ''}
      </div>

      <h2>Counts</h2>
      ${countsSection(progress?.counts ?? result?.counts)}

      <h2>Progress</h2>
      <p>
        Throughput <strong data-field="rate">–</strong> · ETA
        <strong data-field="eta">–</strong
        >${result?.metrics ? html` · last round ran ${Math.round((result.metrics.round?.runMs ?? result.metrics.runMs ?? result.metrics.elapsedMs) / 100) / 10} s at ${result.metrics.round?.itemsPerSec ?? result.metrics.itemsPerSec} items/s` : ''}
      </p>
      <svg class="chart" viewBox="0 0 100 100" preserveAspectRatio="none" role="img" aria-label="Outputs done over time (since this page opened)"><polyline class="done" points=""></polyline></svg>

      <h2>Limits</h2>
      <p>Concurrency <strong>${limits?.concurrency ?? ''}</strong> · tolerated failures <strong>${limits ? (limits.allowedFailures ?? 'no threshold') : ''}</strong></p>
      ${
        snapshot.open
          ? html`<form class="filters" method="post" action="${jobHref(jobId)}/actions/limits" aria-label="Change limits">
              ${csrfField(context)}
              <label>Concurrency <input name="concurrency" type="number" min="1" size="6" /></label>
              <label>Tolerated failures (count) <input name="toleratedFailureCount" type="number" min="0" size="6" /></label>
              <label>Tolerated failures (%) <input name="toleratedFailurePercent" type="number" min="0" max="100" size="6" /></label>
              <label>Priority (1 first … 5 last) <input name="priority" type="number" min="1" max="5" size="4" /></label>
              <button type="submit">Change limits</button>
            </form>`
          : ''
      }
      ${
        result?.limitsChanged?.length
          ? html`<ul aria-label="Limit changes">
              ${result.limitsChanged.map((change) => html`<li>${change.at}: ${JSON.stringify({ ...change, at: undefined, origin: undefined })} (${change.origin})</li>`)}
            </ul>`
          : ''
      }
      ${
        progress?.rateLimits?.length
          ? html`<h2>Rate limits</h2>
              <table aria-label="Rate keys">
                <thead>
                  <tr>
                    <th>Key</th>
                    <th class="num">Waiting</th>
                    <th class="num">In flight</th>
                    <th class="num">All jobs waiting</th>
                    <th>Limit</th>
                    <th class="num">Now /s</th>
                    <th>Host pause</th>
                  </tr>
                </thead>
                <tbody>
                  ${progress.rateLimits.map(
                    (key) =>
                      html`<tr>
                        <td>${key.key}</td>
                        <td class="num">${key.waiting}</td>
                        <td class="num">${key.inFlight}</td>
                        <td class="num">${key.keyWaiting}</td>
                        <td>${key.perSecond}/s${key.concurrency < UNBOUNDED_CONCURRENCY ? `, ${key.concurrency} at once` : ''}</td>
                        <td class="num">${key.effectivePerSecond}</td>
                        <td>${key.blockedUntil ? `until ${key.blockedUntil}` : ''}${key.backoffs > 0 ? ` (${key.backoffs} so far)` : ''}</td>
                      </tr>`,
                  )}
                </tbody>
              </table>`
          : ''
      }

      <h2>Failures by error type</h2>
      ${result ? failureGroups(jobId, result, context, canRetry) : html`<p class="muted">Failures are grouped once a round has settled.</p>`}

      <h2 id="items">Items</h2>
      ${itemBrowser(jobId, result, items)}

      <h2>Flags</h2>
      ${
        result?.flags?.length
          ? html`<ul aria-label="Flags">
              ${result.flags.map((flag) => html`<li>${flag.at}: ${flag.reason}${flag.item ? ` (item ${flag.item})` : ''}</li>`)}
            </ul>`
          : html`<p class="muted">Not flagged.</p>`
      }
      <form class="filters" method="post" action="${jobHref(jobId)}/actions/flag" aria-label="Flag this job">
        ${csrfField(context)} <label>Reason <input name="reason" required size="30" /></label><label>Item (optional) <input name="item" size="14" /></label><button type="submit">Flag</button>
      </form>

      <h2>Webhook deliveries</h2>
      ${
        result?.notifications?.length
          ? html`<table aria-label="Webhook deliveries">
              <thead>
                <tr>
                  <th>Round</th>
                  <th>URL</th>
                  <th>Delivered</th>
                  <th class="num">Attempts</th>
                  <th>Last status</th>
                  <th>At</th>
                </tr>
              </thead>
              <tbody>
                ${result.notifications.map(
                  (n) =>
                    html`<tr>
                      <td>${n.round}</td>
                      <td>${n.url}</td>
                      <td>${n.delivered ? 'yes' : html`<span class="status-Failed">no</span>${n.error ? `: ${n.error.message}` : ''}`}</td>
                      <td class="num">${n.attempts}</td>
                      <td>${n.lastStatus ?? ''}</td>
                      <td>${n.at}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
          : html`<p class="muted">None.</p>`
      }

      <h2>Outputs</h2>
      ${result?.manifest ? html`<p>Manifest: <code>${result.manifest}</code></p>` : ''}
      ${result?.archive?.location ? html`<p>Archive: <code>${result.archive.location}</code> (${result.archive.files} files)</p>` : ''}
      ${result?.exported ? html`<p>Exported to <code>${result.exported.destination}</code> (${result.exported.files} files)</p>` : ''}
      ${result ? html`<p><a href="${jobHref(jobId)}/result.json">Result JSON</a></p>` : ''}

      <h2>Spec</h2>
      ${
        spec
          ? html`<p>${spec.itemCount !== undefined ? `${spec.itemCount} items` : ''}${spec.itemsFrom ? `items from ${spec.itemsFrom}` : ''}</p>
              <pre aria-label="Spec head">${JSON.stringify(spec.head, null, 2)}</pre>`
          : html`<p class="muted">Unavailable.</p>`
      }
    </section>`,
  );
}

function causeChain(report: ErrorReport, depth = 0): Html {
  const { cause, stack, ...facts } = report.details as { cause?: ErrorReport; stack?: string } & Record<string, unknown>;
  return html`<div class="${depth > 0 ? 'cause' : ''}">
    <p><strong>${report.type}</strong> <span class="muted">(${report.class})</span>: ${report.message}</p>
    <p class="muted">${report.step ? `step ${report.step} · ` : ''}${report.attempts !== undefined ? `${report.attempts} attempt(s) · ` : ''}${report.at}</p>
    ${Object.keys(facts).length > 0 ? html`<pre>${JSON.stringify(facts, null, 2)}</pre>` : ''}
    ${
      typeof stack === 'string'
        ? html`<details>
            <summary>Stack</summary>
            <pre>${stack}</pre>
          </details>`
        : ''
    }
    ${
      cause && typeof cause === 'object' && depth < 20
        ? html`<p class="muted">caused by</p>
            ${causeChain(cause, depth + 1)}`
        : ''
    }
  </div>`;
}

export function itemPage(jobId: string, itemId: string, records: OutputRecord[], result: JobResult, context: PageContext, open: boolean): string {
  const failed = records.some((record) => record.status === 'Failed' || record.status === 'Unsolved' || record.status === 'Cancelled');
  return layout(
    `${itemId} · ${jobId}`,
    context,
    html`<p><a href="${jobHref(jobId)}">← ${jobId}</a></p>
      <h1>Item ${itemId}</h1>
      <p class="muted">round ${result.round}</p>
      ${records.length === 0 ? html`<p class="notice">No output of this item in the job's records.</p>` : ''}
      <div class="actions">${failed && (open || result.retryable.items > 0) ? actionForm(context, jobId, 'retry', 'Retry this item', { item: itemId }) : ''}</div>
      ${records.map(
        (record) =>
          html`<section aria-label="Output ${record.output}">
            <h2>${record.output}: <span class="status-${record.status}">${record.status}</span></h2>
            ${record.location ? html`<p>Location <code>${record.location}</code>${record.bytes !== undefined ? ` · ${record.bytes} bytes` : ''}${record.sha256 ? ` · sha256 ${record.sha256}` : ''}</p>` : ''}
            ${record.reason ? html`<p>Reason: ${record.reason}</p>` : ''} ${record.value !== undefined ? html`<pre aria-label="Value">${JSON.stringify(record.value, null, 2)}</pre>` : ''}
            ${record.details ? html`<pre aria-label="Details">${JSON.stringify(record.details, null, 2)}</pre>` : ''}
            ${
              record.error
                ? html`<h3>Error report</h3>
                    ${causeChain(record.error)}`
                : ''
            }
            <details>
              <summary>Record JSON</summary>
              <pre>${JSON.stringify(record, null, 2)}</pre>
            </details>
          </section>`,
      )}`,
  );
}

/** Asks before an action runs: the same form again, confirmed. */
export function confirmPage(jobId: string, action: string, question: string, fields: Record<string, string>, context: PageContext): string {
  return layout(
    'Confirm',
    context,
    html`<h1>Confirm</h1>
      <p>${question}</p>
      <form method="post" action="${jobHref(jobId)}/actions/${action}" aria-label="Confirm">
        ${hiddenFields(context, fields)}<input type="hidden" name="confirmed" value="yes" />
        <div class="actions"><button type="submit">Confirm</button> <a href="${jobHref(jobId)}">Back</a></div>
      </form>`,
  );
}

export function outcomePage(jobId: string, title: string, message: string, ok: boolean, context: PageContext): string {
  return layout(
    title,
    context,
    html`<h1>${title}</h1>
      <p class="notice${ok ? '' : ' error'}" role="status">${message}</p>
      <p><a href="${jobHref(jobId)}">Back to ${jobId}</a></p>`,
  );
}

export function messagePage(title: string, message: string, context: PageContext): string {
  return layout(
    title,
    context,
    html`<h1>${title}</h1>
      <p class="notice error" role="alert">${message}</p>
      <p><a href="/">Jobs</a></p>`,
  );
}

export function loginPage(context: PageContext, failed: boolean): string {
  return layout(
    'Sign in',
    context,
    html`<h1>Sign in</h1>
      ${failed ? html`<p class="notice error" role="alert">That token is not right.</p>` : ''}
      <form method="post" action="/login" aria-label="Sign in">
        ${csrfField(context)}<label>Token (FAULTLINE_WEB_TOKEN) <input name="token" type="password" required autocomplete="current-password" /></label> <button type="submit">Sign in</button>
      </form>`,
  );
}
