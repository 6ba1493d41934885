/**
 * Standard Schema (https://standardschema.dev), the interface zod (3.24+ and 4), valibot and
 * arktype implement: Faultline validates a user's params with the user's own schema objects,
 * whichever library or major version made them. The types are copied, as the spec intends.
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': StandardSchemaV1.Props<Input, Output>;
}

// eslint-disable-next-line @typescript-eslint/no-namespace -- the spec's own shape
export declare namespace StandardSchemaV1 {
  export interface Props<Input = unknown, Output = Input> {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => Result<Output> | Promise<Result<Output>>;
    readonly types?: Types<Input, Output> | undefined;
  }
  export type Result<Output> = SuccessResult<Output> | FailureResult;
  export interface SuccessResult<Output> {
    readonly value: Output;
    readonly issues?: undefined;
  }
  export interface FailureResult {
    readonly issues: ReadonlyArray<Issue>;
  }
  export interface Issue {
    readonly message: string;
    readonly path?: ReadonlyArray<PropertyKey | PathSegment> | undefined;
  }
  export interface PathSegment {
    readonly key: PropertyKey;
  }
  export interface Types<Input = unknown, Output = Input> {
    readonly input: Input;
    readonly output: Output;
  }
  export type InferInput<Schema extends StandardSchemaV1> = NonNullable<Schema['~standard']['types']>['input'];
  export type InferOutput<Schema extends StandardSchemaV1> = NonNullable<Schema['~standard']['types']>['output'];
}

/** A schema's verdict on a value, synchronously: its output, or issues with their paths (and a code where the library gives one). */
export function validateWithSchema(schema: StandardSchemaV1, value: unknown): { ok: true; value: unknown } | { ok: false; issues: { path: (string | number)[]; code: string; message: string }[] } {
  const result = schema['~standard'].validate(value);
  if (result instanceof Promise) {
    return { ok: false, issues: [{ path: [], code: 'async_schema', message: 'asynchronous schemas are not supported for params; use a synchronous one' }] };
  }
  if (!result.issues) return { ok: true, value: result.value };
  return {
    ok: false,
    issues: result.issues.map((issue: StandardSchemaV1.Issue & { code?: unknown }) => ({
      path: (issue.path ?? []).map((segment) => {
        const key = typeof segment === 'object' && segment !== null && 'key' in segment ? segment.key : segment;
        return typeof key === 'number' ? key : String(key);
      }),
      code: typeof issue.code === 'string' ? issue.code : 'invalid_value',
      message: issue.message,
    })),
  };
}
