/** pino everywhere outside workflows: JSON by default, pretty on a TTY; always on stderr so `--json` stdout stays clean. */
import { type LogLevel, type LogMetadata, Runtime, type Logger as TemporalLogger } from '@temporalio/worker';
import pino, { type Logger } from 'pino';

export type { Logger };

export function createLogger(options: { level?: string; format?: 'json' | 'pretty' | 'auto'; name?: string } = {}): Logger {
  const pretty = options.format === 'pretty' || (options.format !== 'json' && process.stderr.isTTY === true);
  const base = {
    level: options.level ?? 'info',
    name: options.name ?? 'faultline',
    redact: { paths: ['*.secret', '*.apiKey', '*.authorization', 'webhook.secret'], censor: '[REDACTED]' },
  };
  if (pretty) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino(base, pino.destination({ fd: 2, sync: false }));
}

const LEVELS: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

/** Temporal's SDK/core logger, written through pino. */
export class PinoTemporalLogger implements TemporalLogger {
  constructor(private readonly logger: Logger) {}
  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    this.logger[LEVELS[level] ?? 'info'](meta ?? {}, message);
  }
  trace(message: string, meta?: LogMetadata): void {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log('ERROR', message, meta);
  }
}

/** Bridges Temporal runtime logs into pino (the runtime is a singleton, created here if absent). */
export function installTemporalLogging(logger: Logger, options: { prometheusAddress?: string } = {}): void {
  try {
    Runtime.install({
      logger: new PinoTemporalLogger(logger.child({ component: 'temporal' })),
      telemetryOptions: {
        logging: { forward: {}, filter: 'WARN' },
        ...(options.prometheusAddress ? { metrics: { prometheus: { bindAddress: options.prometheusAddress, countersTotalSuffix: true } } } : {}),
      },
    });
  } catch {
    // The runtime already exists (a connection was made first, e.g. when embedding); keep its logger.
  }
}
