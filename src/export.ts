/**
 * `faultline export`: a job's output records written grouped by status, one file per status
 * (`Available.ndjson`, `Failed.csv`, …) plus `manifest.json` — like Step Functions' ResultWriter.
 * Records stream from the job's manifest through local temp files (hashed on the way) into a
 * folder or an S3 prefix; each file is written whole or not at all, and `manifest.json` last, so
 * a reader that finds the manifest finds every file it lists.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { OutputStatuses, type JobResult, type OutputRecord, type OutputStatus } from './shared';
import { type S3Options, type Storage, parseStorageLocation } from './storage';
import { FileStore, type ObjectStore } from './storage/object-store';
import { S3Store } from './storage/s3';

export const ExportFormats = ['ndjson', 'csv'] as const;
export type ExportFormat = (typeof ExportFormats)[number];

export interface ExportOptions {
  /** Only these statuses (default: every status that has records). */
  statuses?: readonly OutputStatus[];
  /** Only records whose error has one of these types. */
  types?: readonly string[];
  format?: ExportFormat;
  /** Called every 10,000 records (an activity's heartbeat). */
  progress?: (records: number) => void;
}

export interface ExportedFile {
  status: OutputStatus;
  file: string;
  records: number;
  bytes: number;
  sha256: string;
}

export interface ExportManifest {
  schemaVersion: 1;
  jobId: string;
  round: number;
  jobStatus: JobResult['status'];
  exportedAt: string;
  format: ExportFormat;
  filter: { statuses?: OutputStatus[]; types?: string[] };
  /** Records written per status. */
  counts: Partial<Record<OutputStatus, number>>;
  files: ExportedFile[];
  /** Where the files are: the folder or s3://bucket/prefix given. */
  destination: string;
}

/** CSV columns, always in this order. */
export const CSV_COLUMNS = ['item', 'output', 'status', 'location', 'bytes', 'sha256', 'reason', 'errorType', 'errorClass', 'errorMessage', 'attempts', 'value'] as const;

function csvCell(value: unknown): string {
  if (value === undefined || value === null) return '';
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  // RFC 4180: quote a cell holding a comma, quote or line break, doubling its quotes.
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function csvRow(record: OutputRecord): string {
  const cells = [
    record.item,
    record.output,
    record.status,
    record.location,
    record.bytes,
    record.sha256,
    record.reason,
    record.error?.type,
    record.error?.class,
    record.error?.message,
    record.error?.attempts,
    record.value,
  ];
  return `${cells.map(csvCell).join(',')}\n`;
}

/** One status's temp file, hashed and counted as it is written. */
class StatusFile {
  records = 0;
  bytes = 0;
  private readonly hash = createHash('sha256');
  private readonly out: WriteStream;
  constructor(
    readonly status: OutputStatus,
    readonly temp: string,
    format: ExportFormat,
  ) {
    this.out = createWriteStream(temp);
    if (format === 'csv') this.write(`${CSV_COLUMNS.join(',')}\n`);
  }
  async add(line: string): Promise<void> {
    this.records += 1;
    if (!this.write(line)) await once(this.out, 'drain');
  }
  private write(text: string): boolean {
    this.hash.update(text);
    this.bytes += Buffer.byteLength(text);
    return this.out.write(text);
  }
  private closing?: Promise<string>;
  /** Ends the file (once, however often it is asked); its sha256. */
  close(): Promise<string> {
    this.closing ??= (async () => {
      this.out.end();
      if (!this.out.writableFinished) await once(this.out, 'finish');
      return this.hash.digest('hex');
    })();
    return this.closing;
  }
}

/** The store a destination names: a folder (path or file:// URL) or s3://bucket/prefix. */
export function exportStore(destination: string, s3: S3Options = {}): ObjectStore {
  const location = parseStorageLocation(destination);
  return location.kind === 'file' ? new FileStore(location.root) : new S3Store(location.bucket, location.prefix, s3);
}

/** Writes `records` (one job's, streamed) to `store` grouped by status; returns the manifest it wrote. */
export async function exportRecords(result: JobResult, records: AsyncIterable<OutputRecord> | Iterable<OutputRecord>, store: ObjectStore, options: ExportOptions = {}): Promise<ExportManifest> {
  const format = options.format ?? 'ndjson';
  const statuses = options.statuses ? new Set(options.statuses) : undefined;
  const types = options.types && options.types.length > 0 ? new Set(options.types) : undefined;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-export-'));
  const files = new Map<OutputStatus, StatusFile>();
  try {
    let seen = 0;
    for await (const record of records) {
      if (++seen % 10_000 === 0) options.progress?.(seen);
      if (statuses && !statuses.has(record.status)) continue;
      if (types && !(record.error && types.has(record.error.type))) continue;
      let file = files.get(record.status);
      if (!file) {
        file = new StatusFile(record.status, path.join(dir, `${record.status}.${format}`), format);
        files.set(record.status, file);
      }
      await file.add(format === 'csv' ? csvRow(record) : `${JSON.stringify(record)}\n`);
    }
    const exported: ExportedFile[] = [];
    // In the result's order of statuses, so manifests of the same job compare equal.
    for (const status of OutputStatuses) {
      const file = files.get(status);
      if (!file) continue;
      const sha256 = await file.close();
      const name = `${status}.${format}`;
      await store.putStream(name, createReadStream(file.temp));
      exported.push({ status, file: name, records: file.records, bytes: file.bytes, sha256 });
    }
    const manifest: ExportManifest = {
      schemaVersion: 1,
      jobId: result.jobId,
      round: result.round,
      jobStatus: result.status,
      exportedAt: new Date().toISOString(),
      format,
      filter: { ...(options.statuses ? { statuses: [...options.statuses] } : {}), ...(types ? { types: [...types] } : {}) },
      counts: Object.fromEntries(exported.map((file) => [file.status, file.records])),
      files: exported,
      destination: store.display,
    };
    await store.put('manifest.json', `${JSON.stringify(manifest, null, 2)}\n`);
    return manifest;
  } finally {
    for (const file of files.values()) await file.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A result's output records one at a time: inline, or streamed from its manifest in job storage (never all in memory).
 * `contains` skips parsing manifest lines without that text (callers still filter exactly).
 */
export async function* resultRecords(result: JobResult, storage: Pick<Storage, 'readLines'>, contains?: string): AsyncIterable<OutputRecord> {
  if (result.outputs) yield* result.outputs;
  else if (result.manifest) yield* storage.readLines<OutputRecord>(result.manifest, contains);
}
