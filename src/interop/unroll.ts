/**
 * A recursive or relaxed model as the plain Llama it computes: every unrolled position gets its
 * own layer, copied from the unique layer the sharing plan names there, with that position's
 * LoRA folded in (W_l = W_u + B_l·A_l). Export to Hugging Face and GGUF writes this form.
 *
 * A model with MoR routers is not a plain Llama: which tokens run which recursion depends on the
 * routers, which no Llama loader knows, so it is refused with an ExportError.
 */
import { MorError } from '../errors.js';
import { validateConfig, type ModelConfig } from '../model/config.js';
import { modelFromParams, type Model } from '../model/model.js';
import { LAYER_MATRICES, LM_HEAD, assembleParams, layerParamName } from '../model/params.js';
import { matmul } from '../tensor/ops.js';
import { noGrad, parameter, type Tensor } from '../tensor/tensor.js';

/** A model that cannot be written in the format asked for (routers in a plain-Llama format, …). */
export class ExportError extends MorError {
  constructor(message: string) {
    super('E_EXPORT', message);
  }
}

/** The plain (vanilla) config of a model: same shapes, no recursion section. */
export function plainConfig(c: ModelConfig, what = 'this model'): ModelConfig {
  if (c.mor !== null) {
    throw new ExportError(
      `${what} has MoR routers (a 'mor' section, ${c.mor.routing} routing): which tokens run each recursion is ` +
        `decided by its routers, which a plain Llama does not have, so it cannot be exported as one; ` +
        `export a model without routers (plain recursive or relaxed models unroll)`,
    );
  }
  if (c.moe !== null) {
    throw new ExportError(`${what} has Mixture-of-Experts MLPs (a 'moe' section): a plain Llama has one dense MLP per layer, so it cannot be exported as one`);
  }
  if (c.mod !== null) {
    throw new ExportError(
      `${what} has Mixture-of-Depths routers (a 'mod' section): which tokens run each routed layer is decided by ` +
        `its routers, which a plain Llama does not have, so it cannot be exported as one`,
    );
  }
  return validateConfig({ ...c, recursion: null, mor: null });
}

const copy = (t: Tensor, name: string): Tensor => parameter(new Float32Array(t.f32()), t.shape, name);

/** The model unrolled into plain layers (itself when it already is plain). Weights are copies. */
export function unrollModel(model: Model, what?: string): Model {
  const c = model.config;
  const plain = plainConfig(c, what);
  if (c.recursion === null) return model;
  const p = model.params;
  const byName = new Map<string, Tensor>();
  byName.set('model.embed_tokens.weight', copy(p.embed, 'model.embed_tokens.weight'));
  byName.set('model.norm.weight', copy(p.norm, 'model.norm.weight'));
  if (!c.tie_word_embeddings) byName.set(LM_HEAD, copy(p.head, LM_HEAD));
  noGrad(() => {
    for (let l = 0; l < c.num_hidden_layers; l++) {
      const layer = p.layers[model.plan.uniqueOf[l] as number];
      if (layer === undefined) throw new ExportError(`the layer plan names a missing layer at position ${l}`);
      byName.set(`model.layers.${l}.input_layernorm.weight`, copy(layer.inputNorm, `model.layers.${l}.input_layernorm.weight`));
      byName.set(`model.layers.${l}.post_attention_layernorm.weight`, copy(layer.postNorm, `model.layers.${l}.post_attention_layernorm.weight`));
      for (const m of LAYER_MATRICES) {
        const name = layerParamName(l, m);
        const dense = layer.w[m];
        if (dense === undefined) throw new ExportError(`layer ${l} has no dense ${m} (an MoE layer)`);
        const w = copy(dense, name);
        const lora = p.lora?.[l]?.[m];
        if (lora !== undefined) {
          const ba = matmul(lora.B, lora.A).f32(); //   (out, r)·(r, in) = (out, in)
          const wd = w.f32();
          for (let i = 0; i < wd.length; i++) wd[i] = (wd[i] as number) + (ba[i] as number);
        }
        byName.set(name, w);
      }
    }
  });
  return modelFromParams(plain, assembleParams(plain, byName));
}
