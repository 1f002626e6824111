#!/usr/bin/python3
"""A tiny Hugging Face Llama directory, written from PyTorch without transformers.

Writes test/fixtures/hf-tiny/ laid out as transformers' save_pretrained lays out a
LlamaForCausalLM: config.json with the key set of SmolLM2-135M's config (tiny sizes), BF16
weights under transformers' tensor names in two shards with model.safetensors.index.json, an
untied lm_head.weight, a small byte-level BPE tokenizer.json (SmolLM's pre-tokenizer: single
digits, then GPT-2's byte-level split) with tokenizer_config.json naming BOS and EOS, and
reference.safetensors: a few token ids and the logits of a plain-torch Llama forward
(rotate-half RoPE) over the BF16 weights widened to f32. test/interop-hf.test.ts compares our
logits to them. Run with Debian's python3-torch:

    /usr/bin/python3 tools/hf_fixture.py
"""
import json
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import MATRICES, matrix_path, matrix_shape, rmsnorm, rope, write_safetensors  # noqa: E402

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'hf-tiny')

SPECIALS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']
NUM_MERGES = 41  # 3 specials + 256 bytes + 41 merges = 300 tokens; the model pads its vocabulary to 320

# Every key of SmolLM2-135M's config.json, with tiny sizes.
CONFIG = {
    'architectures': ['LlamaForCausalLM'],
    'attention_bias': False,
    'attention_dropout': 0.0,
    'bos_token_id': 1,
    'eos_token_id': 2,
    'head_dim': 8,
    'hidden_act': 'silu',
    'hidden_size': 32,
    'initializer_range': 0.041666666666666664,
    'intermediate_size': 64,
    'is_llama_config': True,
    'max_position_embeddings': 64,
    'mlp_bias': False,
    'model_type': 'llama',
    'num_attention_heads': 4,
    'num_hidden_layers': 2,
    'num_key_value_heads': 2,
    'pad_token_id': None,
    'pretraining_tp': 1,
    'rms_norm_eps': 1e-05,
    'rope_interleaved': False,
    'rope_scaling': None,
    'rope_theta': 100000,
    'tie_word_embeddings': False,
    'torch_dtype': 'bfloat16',
    'transformers_version': '4.48.0',
    'use_cache': True,
    'vocab_size': 320,
}

TEXT = ('The President shall be Commander in Chief of the Army and Navy of the United States, '
        'and of the Militia of the several States, when called into the actual Service of the '
        'United States; he may require the Opinion, in writing, of the principal Officer in each '
        'of the executive Departments, in 1787 and 1789. ') * 3


def bytes_to_unicode():
    """GPT-2's byte → printable character map (the byte-level alphabet)."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def train_merges(text, num_merges):
    """A plain BPE over GPT-2-style words (letters with their leading space, digits one by one)."""
    b2u = bytes_to_unicode()
    words = re.findall(r" ?[A-Za-z]+|\d| ?[^\sA-Za-z\d]+|\s+", text)
    seqs = [[b2u[b] for b in w.encode('utf-8')] for w in words]
    merges = []
    for _ in range(num_merges):
        counts = {}
        for s in seqs:
            for a, b in zip(s, s[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        (a, b), _n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if s[i] == a and s[i + 1] == b:
                    s[i:i + 2] = [a + b]
                i += 1
    return merges


def tokenizer_files():
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in sorted(bytes_to_unicode().values(), key=lambda c: [k for k, v in bytes_to_unicode().items() if v == c][0]):
        vocab[ch] = len(vocab)
    merges = train_merges(TEXT, NUM_MERGES)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    added = [{'id': i, 'content': t, 'single_word': False, 'lstrip': False, 'rstrip': False,
              'normalized': False, 'special': True} for i, t in enumerate(SPECIALS)]
    byte_level = {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True}
    tok = {
        'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': added, 'normalizer': None,
        'pre_tokenizer': {'type': 'Sequence', 'pretokenizers': [{'type': 'Digits', 'individual_digits': True}, byte_level]},
        'post_processor': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': False, 'use_regex': True},
        'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True, 'use_regex': True},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': None,
                  'end_of_word_suffix': None, 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                  'vocab': vocab, 'merges': [f'{a} {b}' for a, b in merges]},
    }
    tok_config = {
        'add_prefix_space': False,
        'added_tokens_decoder': {str(i): {k: v for k, v in t.items() if k != 'id'} for i, t in enumerate(added)},
        'bos_token': '<|im_start|>', 'clean_up_tokenization_spaces': False, 'eos_token': '<|im_end|>',
        'model_max_length': 64, 'tokenizer_class': 'GPT2Tokenizer', 'unk_token': '<|endoftext|>',
        'vocab_size': len(vocab),
    }
    return tok, tok_config


def make_params(c, gen):
    """Weights under transformers' names, rounded to bf16; norm scales near 1."""
    d, V = c['hidden_size'], c['vocab_size']
    p = {'model.embed_tokens.weight': torch.randn(V, d, generator=gen) * 0.5}
    for u in range(c['num_hidden_layers']):
        p[f'model.layers.{u}.input_layernorm.weight'] = 1 + 0.1 * torch.randn(d, generator=gen)
        p[f'model.layers.{u}.post_attention_layernorm.weight'] = 1 + 0.1 * torch.randn(d, generator=gen)
        for m in MATRICES:
            out, inp = matrix_shape(c, m)
            p[f'model.layers.{u}.{matrix_path(m)}.weight'] = torch.randn(out, inp, generator=gen) / inp ** 0.5
    p['model.norm.weight'] = 1 + 0.1 * torch.randn(d, generator=gen)
    p['lm_head.weight'] = torch.randn(V, d, generator=gen) / d ** 0.5
    return {k: v.to(torch.bfloat16) for k, v in p.items()}


def forward(c, p, ids):
    """LlamaForCausalLM's forward in plain torch, f32, one sequence: logits (T, V)."""
    d, H, KVH = c['hidden_size'], c['num_attention_heads'], c['num_key_value_heads']
    hd, T = d // H, ids.shape[0]
    pos = torch.arange(T)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    h = p['model.embed_tokens.weight'][ids.long()]
    for u in range(c['num_hidden_layers']):
        def lin(x, m):
            return x @ p[f'model.layers.{u}.{matrix_path(m)}.weight'].T
        x = rmsnorm(h, p[f'model.layers.{u}.input_layernorm.weight'], c['rms_norm_eps'])
        q = rope(lin(x, 'q_proj').view(1, T, H, hd), pos, c['rope_theta'])[0]
        k = rope(lin(x, 'k_proj').view(1, T, KVH, hd), pos, c['rope_theta'])[0].repeat_interleave(H // KVH, dim=1)
        v = lin(x, 'v_proj').view(T, KVH, hd).repeat_interleave(H // KVH, dim=1)
        s = torch.einsum('qhd,khd->hqk', q, k) / hd ** 0.5
        a = torch.einsum('hqk,khd->qhd', s.masked_fill(~mask, float('-inf')).softmax(-1), v).reshape(T, H * hd)
        h = h + lin(a, 'o_proj')
        x = rmsnorm(h, p[f'model.layers.{u}.post_attention_layernorm.weight'], c['rms_norm_eps'])
        h = h + lin(torch.nn.functional.silu(lin(x, 'gate_proj')) * lin(x, 'up_proj'), 'down_proj')
    return rmsnorm(h, p['model.norm.weight'], c['rms_norm_eps']) @ p['lm_head.weight'].T


def write_json(path, obj):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
        f.write('\n')
    os.replace(tmp, path)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    c = CONFIG
    params = make_params(c, torch.Generator().manual_seed(11))
    # two shards as save_pretrained splits them: layer 0 and the embedding, then the rest
    names = list(params)
    first = [n for n in names if n.startswith('model.embed_tokens') or n.startswith('model.layers.0.')]
    shards = {'model-00001-of-00002.safetensors': first,
              'model-00002-of-00002.safetensors': [n for n in names if n not in first]}
    weight_map = {}
    for file, tensors in shards.items():
        write_safetensors(os.path.join(OUT_DIR, file), {n: params[n] for n in tensors}, {'format': 'pt'})
        weight_map.update({n: file for n in tensors})
    total = sum(t.numel() * 2 for t in params.values())
    write_json(os.path.join(OUT_DIR, 'model.safetensors.index.json'),
               {'metadata': {'total_size': total}, 'weight_map': dict(sorted(weight_map.items()))})
    write_json(os.path.join(OUT_DIR, 'config.json'), c)
    tok, tok_config = tokenizer_files()
    write_json(os.path.join(OUT_DIR, 'tokenizer.json'), tok)
    write_json(os.path.join(OUT_DIR, 'tokenizer_config.json'), tok_config)

    ids = torch.tensor([1, 5, 100, 299, 17, 260, 42, 3, 310, 0], dtype=torch.int32)
    with torch.no_grad():
        logits = forward(c, {k: v.float() for k, v in params.items()}, ids)
    write_safetensors(os.path.join(OUT_DIR, 'reference.safetensors'), {'input_ids': ids, 'logits': logits.float()},
                      {'format': 'mor-hf-reference', 'version': '1'})
    print(f'wrote {OUT_DIR}: {len(params)} tensors, logits {tuple(logits.shape)}')


if __name__ == '__main__':
    main()
