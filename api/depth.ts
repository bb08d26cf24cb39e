// Moved to common/ (the consumer's metrics use it too).
export * from '../common/depth.js';
