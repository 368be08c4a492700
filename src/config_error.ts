/**
 * A configuration or usage error: exit code 2, one line. A leaf of its own so
 * that the option parser (config.ts) and the config file reader
 * (configfile.ts) can both throw it without importing each other.
 */
export class ConfigError extends Error {}
