/**
 * The error every configuration check throws: exit code 2 and one line on
 * stderr. In a module of its own so that config.ts and configfile.ts both use
 * it without importing each other.
 */

/** A configuration or usage error: exit code 2, one line. */
export class ConfigError extends Error {}
