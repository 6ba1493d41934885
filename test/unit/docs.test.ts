/**
 * The docs are promises: every command CONTRACT.md and the README name exists (with the flags they
 * show), every command exists in CONTRACT.md, every setting is in the README's table, and every
 * file and section they link to is there.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main';
import { ENV } from '../../src/shared/constants';

const ROOT = path.resolve(__dirname, '..', '..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const contract = read('docs/CONTRACT.md');
const readme = read('README.md');
const program = buildProgram();
const commands = new Map<string, Command>(program.commands.map((command) => [command.name(), command]));
const flagsOf = (command: Command) => new Set(command.options.flatMap((option) => [option.long, option.short].filter((flag): flag is string => Boolean(flag))));

describe('docs match the code', () => {
  it("every command in CONTRACT.md's CLI table exists with the flags shown, and every command is in the table", () => {
    // The first cell of each table row that starts with a command in backticks (`\|` inside them is a literal bar).
    const rows = contract
      .split('\n')
      .filter((line) => line.startsWith('| `'))
      .flatMap((line) => [...(line.split(/(?<!\\)\|/)[1] ?? '').matchAll(/`([^`]+)`/g)].map((match) => match[1] ?? ''));
    assert.ok(rows.length >= 20, `CLI rows found: ${rows.length}`);
    const documented = new Set<string>();
    for (const row of rows) {
      const [name, ...rest] = row.split(' ');
      const command = commands.get(name ?? '');
      assert.ok(command, `CONTRACT.md documents "${name}", which the CLI does not have`);
      documented.add(name ?? '');
      for (const flag of rest.join(' ').match(/--[a-z][a-z-]*/g) ?? []) assert.ok(flagsOf(command).has(flag), `CONTRACT.md shows ${name} ${flag}, which it does not take`);
    }
    const hidden = new Set(['bundle']);
    for (const name of commands.keys()) if (!hidden.has(name)) assert.ok(documented.has(name), `the CLI has "${name}", which CONTRACT.md's table does not document`);
    assert.doesNotMatch(contract, /not shipped yet/i, 'nothing in the contract is announced as missing');
  });

  it('every `npx faultline …` line in the README names a command and flags that exist', () => {
    const lines = [...readme.matchAll(/npx faultline ([a-z-]+)([^\n#]*)/g)];
    assert.ok(lines.length >= 15);
    for (const [, name, rest] of lines) {
      const command = commands.get(name ?? '');
      assert.ok(command, `README runs "faultline ${name}", which does not exist`);
      for (const flag of rest?.match(/(?<=\s)--[a-z][a-z-]*/g) ?? []) assert.ok(flagsOf(command).has(flag), `README runs faultline ${name} ${flag}, which it does not take`);
    }
  });

  it("every user-facing setting is in the README's configuration table", () => {
    const internal = new Set<string>([ENV.workflowBundle]);
    for (const name of Object.values(ENV)) if (!internal.has(name)) assert.match(readme, new RegExp(`\\| [^\\n]*\`${name}\``), `${name} is missing from README's Configuration table`);
  });

  it('every relative link and #anchor in README.md and docs/ leads somewhere', () => {
    const slug = (heading: string) =>
      heading
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s-]/gu, '')
        .trim()
        .replace(/\s/g, '-');
    for (const file of ['README.md', 'docs/CONTRACT.md', 'docs/job-spec.md', 'docs/pipelines.md']) {
      const text = read(file);
      const anchors = new Set([...text.matchAll(/^#+ (.+)$/gm)].map((match) => slug(match[1] ?? '')));
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (!target || /^[a-z]+:/.test(target)) continue;
        if (target.startsWith('#')) {
          assert.ok(anchors.has(target.slice(1)), `${file} links to ${target}, which is no heading there`);
          continue;
        }
        assert.ok(existsSync(path.join(ROOT, path.dirname(file), target.split('#')[0] ?? '')), `${file} links to ${target}, which does not exist`);
      }
    }
  });
});
