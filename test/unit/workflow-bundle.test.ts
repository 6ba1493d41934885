/**
 * The workflow bundle is compiled for the Node that runs it (ES2022), not the SDK's ES2017: object
 * spreads stay native instead of becoming a helper that defines each property one by one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bundleWorkflowCode } from '@temporalio/worker';
import { WORKFLOW_TARGET, workflowSources } from '../../src/workflow-bundle';

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} };
type Config = Parameters<ReturnType<typeof workflowSources>['webpackConfigHook']>[0];

describe('workflow bundle', () => {
  it("sets the SDK's swc-loader target to ES2022", () => {
    const config: Config = {
      module: {
        rules: [
          { test: /\.js$/, use: ['source-map-loader'] },
          { test: /\.ts$/, use: { loader: '/x/swc-loader/index.js', options: { jsc: { target: 'es2017' } } } },
        ],
      },
    };
    const rules = workflowSources().webpackConfigHook(config).module?.rules ?? [];
    assert.deepEqual(rules[1], { test: /\.ts$/, use: { loader: '/x/swc-loader/index.js', options: { jsc: { target: WORKFLOW_TARGET } } } });
    assert.equal(WORKFLOW_TARGET, 'es2022');
  });

  it('refuses a bundler config without the swc-loader rule, rather than ship slower code quietly', () => {
    assert.throws(() => workflowSources().webpackConfigHook({ module: { rules: [{ test: /\.ts$/, use: 'ts-loader' }] } }), /no swc-loader rule/);
  });

  it('bundles the workflows with native object spreads and class fields', async () => {
    const { code } = await bundleWorkflowCode({ ...workflowSources(), logger: quiet });
    // Our own sources spread objects in hundreds of places: compiled for ES2017 each is a call to these helpers.
    for (const helper of ['_object_spread(', '_object_spread_props(', '_define_property(']) assert.equal(code.split(helper).length - 1, 0, `${helper} in the bundle`);
    // The negative control: the SDK's own target leaves them in.
    const { code: sdkDefault } = await bundleWorkflowCode({ workflowsPath: workflowSources().workflowsPath, logger: quiet });
    assert.ok(sdkDefault.split('_object_spread(').length - 1 > 50);
  });
});
