/**
 * Typed errors. Every error the project throws on purpose is a MorError with a stable `code`,
 * and its message says what was expected and what came.
 */
export class MorError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A tensor or buffer had the wrong shape or length. */
export class ShapeError extends MorError {
  constructor(message: string) {
    super('E_SHAPE', message);
  }
}

/** A buffer had the wrong element type (e.g. Float64Array where Float32Array is required). */
export class DtypeError extends MorError {
  constructor(message: string) {
    super('E_DTYPE', message);
  }
}

/** An argument was out of its valid range (negative size, index past the end, bad option). */
export class ArgumentError extends MorError {
  constructor(message: string) {
    super('E_ARGUMENT', message);
  }
}

/** A requested backend is not available (e.g. the native addon failed to build). */
export class BackendUnavailableError extends MorError {
  constructor(message: string) {
    super('E_BACKEND_UNAVAILABLE', message);
  }
}

/** Autograd misuse: backward from a non-scalar, through a freed graph, and the like. */
export class AutogradError extends MorError {
  constructor(message: string) {
    super('E_AUTOGRAD', message);
  }
}

/**
 * Data-pipeline failure: a missing or unreadable corpus path, a malformed JSON line, a missing
 * text column, an empty corpus, a corrupt token cache or tokenizer file.
 */
export class DataError extends MorError {
  constructor(message: string) {
    super('E_DATA', message);
  }
}
