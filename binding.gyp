{
  # Native kernel addon (see native/src, native/README.md). Built by scripts/build-native.mjs via
  # node-gyp. GEMM provider: OpenBLAS when scripts/detect-blas.mjs finds it, else the built-in kernel.
  #
  # One addon for any CPU of the architecture: the SIMD kernel sources are compiled once per
  # instruction-set variant (native/src/isa.h), each into its own namespace mor::<variant>:
  #   generic  the build's baseline flags (SSE2 on x86-64, NEON on arm64), in mor_native itself
  #   avx2     x86-64-v3 (AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE)         mor_simd_avx2 (x64 only)
  #   avx512   x86-64-v4 (AVX-512 F/BW/CD/DQ/VL on top)                   mor_simd_avx512 (x64 only)
  #   avx512bf16  + AVX512_BF16 (vdpbf16ps in the bf16 packed GEMM)      mor_simd_avx512bf16 (x64 only)
  # and native/src/isa.cc picks the widest the CPU runs at load (MOR_SIMD picks a narrower one).
  # No -march=native anywhere: the build machine's CPU does not decide what the addon runs on.
  "variables": {
    "mor_kernel_sources": [
      "native/src/attention.cc",
      "native/src/decode.cc",
      "native/src/gemm_builtin.cc",
      "native/src/gemm_bf16.cc",
      "native/src/isa_table.cc",
      "native/src/kernels.cc"
    ],
    "mor_avx2_flags": ["-mavx", "-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mmovbe"],
    "mor_avx512_flags": ["-mavx512f", "-mavx512bw", "-mavx512cd", "-mavx512dq", "-mavx512vl"],
    "mor_avx512bf16_flags": ["-mavx512bf16"]
  },
  "target_defaults": {
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20", "-std=c++20"],
    # No -ffast-math: kernels rely on IEEE infinities (lse = -Infinity) and NaN propagation.
    # -ffp-contract=fast lets a·b+c become one FMA (ISO C++ mode turns it off by default).
    "cflags": ["-O3", "-fopenmp", "-ffp-contract=fast", "-fvisibility=hidden", "-fPIC"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "MACOSX_DEPLOYMENT_TARGET": "11.0",
      "OTHER_CFLAGS": ["-O3", "-ffp-contract=fast"],
      "OTHER_CPLUSPLUSFLAGS": ["-O3", "-ffp-contract=fast"]
    }
  },
  "targets": [
    {
      "target_name": "mor_native",
      # Baseline code (binding, GEMM providers, CPU probe) and the generic kernel variant. These
      # objects come first at link time, so shared inline code resolves to baseline copies (isa.h).
      "sources": [
        "native/src/addon.cc",
        "native/src/gemm.cc",
        "native/src/isa.cc",
        "native/src/util.cc",
        "<@(mor_kernel_sources)"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "<!@(node scripts/detect-blas.mjs --defines)"
      ],
      "cflags": ["<!@(node scripts/detect-blas.mjs --cflags)"],
      "ldflags": ["-fopenmp"],
      "libraries": ["<!@(node scripts/detect-blas.mjs --libs)"],
      "conditions": [
        ["target_arch=='x64'", {
          "defines": ["MOR_X86_VARIANTS"],
          "dependencies": ["mor_simd_avx2", "mor_simd_avx512", "mor_simd_avx512bf16"]
        }]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "mor_simd_avx2",
          "type": "static_library",
          "sources": ["<@(mor_kernel_sources)"],
          "defines": ["MOR_ISA=avx2"],
          "cflags": ["<@(mor_avx2_flags)"],
          "xcode_settings": {"OTHER_CFLAGS": ["<@(mor_avx2_flags)"], "OTHER_CPLUSPLUSFLAGS": ["<@(mor_avx2_flags)"]}
        },
        {
          "target_name": "mor_simd_avx512",
          "type": "static_library",
          "sources": ["<@(mor_kernel_sources)"],
          "defines": ["MOR_ISA=avx512"],
          "cflags": ["<@(mor_avx2_flags)", "<@(mor_avx512_flags)"],
          "xcode_settings": {"OTHER_CFLAGS": ["<@(mor_avx2_flags)", "<@(mor_avx512_flags)"], "OTHER_CPLUSPLUSFLAGS": ["<@(mor_avx2_flags)", "<@(mor_avx512_flags)"]}
        },
        {
          "target_name": "mor_simd_avx512bf16",
          "type": "static_library",
          "sources": ["<@(mor_kernel_sources)"],
          "defines": ["MOR_ISA=avx512bf16"],
          "cflags": ["<@(mor_avx2_flags)", "<@(mor_avx512_flags)", "<@(mor_avx512bf16_flags)"],
          "xcode_settings": {"OTHER_CFLAGS": ["<@(mor_avx2_flags)", "<@(mor_avx512_flags)", "<@(mor_avx512bf16_flags)"], "OTHER_CPLUSPLUSFLAGS": ["<@(mor_avx2_flags)", "<@(mor_avx512_flags)", "<@(mor_avx512bf16_flags)"]}
        }
      ]
    }]
  ]
}
