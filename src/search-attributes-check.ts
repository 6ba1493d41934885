/**
 * Faultline's search attributes must exist on the namespace before a job starts (the client
 * sets them at start; workflows upsert them). A namespace without them is named in one line
 * with the commands that register them, instead of Temporal's bare "Failed to start Workflow".
 */
import { SEARCH_ATTRIBUTES } from './shared/constants';

export class SearchAttributesMissing extends Error {
  constructor(
    readonly namespace: string,
    readonly missing: string[],
  ) {
    super(
      `namespace ${namespace} lacks Faultline's search attributes ${missing.join(', ')}; register them once: ${missing
        .map((name) => `temporal operator search-attribute create --namespace ${namespace} --name ${name} --type ${SEARCH_ATTRIBUTES[name as keyof typeof SEARCH_ATTRIBUTES]}`)
        .join(' && ')}`,
    );
    this.name = 'SearchAttributesMissing';
  }
}

interface OperatorService {
  listSearchAttributes(request: { namespace: string }): Promise<{ customAttributes?: Record<string, unknown> | null; systemAttributes?: Record<string, unknown> | null }>;
}

/**
 * Which of Faultline's attributes the namespace lacks; undefined when the server does not let us
 * look (e.g. a Temporal Cloud API key without operator rights): the first job start then says it.
 */
export async function missingSearchAttributes(operator: OperatorService, namespace: string): Promise<string[] | undefined> {
  let registered: Record<string, unknown>;
  try {
    registered = (await operator.listSearchAttributes({ namespace })).customAttributes ?? {};
  } catch {
    return undefined;
  }
  return Object.keys(SEARCH_ATTRIBUTES).filter((name) => registered[name] === undefined);
}
