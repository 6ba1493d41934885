import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isPrivateAddress, refusedLiteral } from '../../src/activities/fetch';

describe('outbound guard: address classes', () => {
  it('refuses private, loopback, link-local, metadata, NAT64 and IPv4-compatible forms', () => {
    for (const address of [
      '127.0.0.1',
      '10.1.2.3',
      '169.254.169.254',
      '192.168.0.1',
      '::1',
      'fe80::1',
      'fd00:ec2::254',
      '::ffff:127.0.0.1',
      '64:ff9b::a9fe:a9fe',
      '64:ff9b:1::1',
      '::a9fe:a9fe',
      '::7f00:1',
    ]) {
      assert.equal(isPrivateAddress(address), true, address);
    }
    for (const address of ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946', '1.1.1.1']) assert.equal(isPrivateAddress(address), false, address);
  });

  it('checks IP literals in URLs (they never reach the DNS hook), honouring FAULTLINE_ALLOWED_HOSTS', () => {
    assert.equal(refusedLiteral(new URL('http://169.254.169.254/latest'), []), '169.254.169.254');
    assert.equal(refusedLiteral(new URL('http://[64:ff9b::a9fe:a9fe]/x'), []), '64:ff9b::a9fe:a9fe');
    assert.equal(refusedLiteral(new URL('http://127.0.0.1:8080/x'), ['127.0.0.1']), undefined);
    assert.equal(refusedLiteral(new URL('https://example.org/x'), []), undefined, 'names are checked at connect time');
  });
});
