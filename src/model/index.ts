/** The model layer: config, presets, sharing plans, the parameter table, MoR routing, the forward, FLOPs (subpath `mor-ts/model`). */
export * from './config.js';
export * from './presets.js';
export * from './sharing.js';
export * from './params.js';
export * from './model.js';
export * from './flops.js';
export * from './mor-config.js';
export * from './routing.js';
export { routedTrunk, updateRouterBias, type RoutingMode, type RoutingStats, type RoutedTrunkResult, type Selection, type TrunkOptions } from './mor.js';
export * from './moe-config.js';
export * from './moe-params.js';
export { MoeForward, MoeStats, moeSelect, moeScores, moeGateWeights, updateMoeBias, type MoeRouterCounts, type MoeRouterSummary } from './moe.js';
export * from './mod-config.js';
export { modStack, MOD_GATING, type ModStackOptions, type ModStackResult } from './mod.js';
