import { MorError } from '../errors.js';

/** A config that failed validation: says which field, what was expected and what came. */
export class ConfigError extends MorError {
  constructor(message: string) {
    super('E_CONFIG', message);
  }
}
