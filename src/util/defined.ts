/**
 * Optional fields under exactOptionalPropertyTypes: an options object may leave a field out but
 * not set it to undefined. `definedOnly({ a: x, b: y })` keeps the fields whose value is defined.
 */
export type DefinedOnly<T> = { [K in keyof T]?: Exclude<T[K], undefined> };

export function definedOnly<T extends object>(fields: T): DefinedOnly<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as DefinedOnly<T>;
}
