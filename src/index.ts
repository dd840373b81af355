/**
 * `model-stealing-defense`: what a user of the middleware, the proxy or the surrogates needs, from
 * every layer (TensorFlow.js and Express load with it). The entries `./defenses`, `./detection`,
 * `./server` and `./models` hold each part alone.
 */
export * from './entries/defenses.js';
export * from './entries/detection.js';
export * from './entries/server.js';
export * from './entries/models.js';
