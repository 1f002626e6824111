/** Public API of the package. */
export * from './errors.js';
export { getBackend, setBackend, getBackendByName, availableBackends } from './backend/index.js';
export type * from './backend/backend.js';
export * from './tensor/index.js';
export { VERSION } from './version.js';
