import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderOutputsTable } from '../../src/cli/output';
import type { OutputRecord } from '../../src/shared';

describe('result table', () => {
  it('wraps an error detail instead of cutting it', () => {
    const message = 'the remote endpoint answered 503 Service Unavailable three times in a row and then the connection was reset by peer while reading the body';
    const records: OutputRecord[] = [
      {
        item: 'a',
        output: 'thumbnail',
        status: 'Failed',
        error: { schemaVersion: 1, type: 'EndpointUnavailable', class: 'transient', message, details: {}, item: 'a', at: '2026-11-22T00:00:00Z', attempts: 3 },
      },
      { item: 'b', output: 'thumbnail', status: 'Available', location: 'file:///tmp/b.jpg' },
    ];
    const table = renderOutputsTable(records);
    const lines = table.split('\n');
    assert.ok(
      lines.every((line) => line.length <= 4 + 2 + 9 + 2 + 9 + 2 + 90),
      'no line is wider than the table',
    );
    assert.ok(!table.includes('…'), 'nothing is cut');
    assert.equal(table.replace(/\s+/g, ' ').includes(message), true, 'the whole message is there');
    assert.match(lines.at(-1) ?? '', /^b\s+thumbnail\s+Available\s+file:\/\/\/tmp\/b\.jpg$/);
  });
});
