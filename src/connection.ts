/** Connection options for local dev servers, self-hosted clusters (mTLS) and Temporal Cloud (API key). */
import { readFileSync } from 'node:fs';
import type { NativeConnectionOptions } from '@temporalio/worker';
import type { Config } from './config';

export function connectionOptions(config: Pick<Config, 'address' | 'apiKey' | 'tlsCert' | 'tlsKey' | 'tlsCa' | 'tlsServerName'>): NativeConnectionOptions {
  const options: NativeConnectionOptions = { address: config.address };
  if (config.tlsCert && config.tlsKey) {
    options.tls = {
      clientCertPair: { crt: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) },
      ...(config.tlsCa ? { serverRootCACertificate: readFileSync(config.tlsCa) } : {}),
      ...(config.tlsServerName ? { serverNameOverride: config.tlsServerName } : {}),
    };
  } else if (config.apiKey || config.tlsCa) {
    options.tls = { ...(config.tlsCa ? { serverRootCACertificate: readFileSync(config.tlsCa) } : {}), ...(config.tlsServerName ? { serverNameOverride: config.tlsServerName } : {}) };
  }
  if (config.apiKey) options.apiKey = config.apiKey;
  return options;
}
