{
  # Native kernel addon (see native/src). Built by scripts/build-native.mjs via node-gyp.
  # GEMM provider: OpenBLAS when scripts/detect-blas.mjs finds it, else the built-in kernel.
  "targets": [
    {
      "target_name": "mor_native",
      "sources": [
        "native/src/addon.cc",
        "native/src/gemm.cc",
        "native/src/attention.cc",
        "native/src/decode.cc",
        "native/src/kernels.cc",
        "native/src/util.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "<!@(node scripts/detect-blas.mjs --defines)"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20", "-std=c++20"],
      # No -ffast-math: kernels rely on IEEE infinities (lse = -Infinity) and NaN propagation.
      # -ffp-contract=fast lets a·b+c become one FMA (ISO C++ mode turns it off by default).
      "cflags": ["-O3", "-march=native", "-fopenmp", "-ffp-contract=fast", "-fvisibility=hidden",
                 "<!@(node scripts/detect-blas.mjs --cflags)"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti"],
      "ldflags": ["-fopenmp"],
      "libraries": ["<!@(node scripts/detect-blas.mjs --libs)"],
      "conditions": [
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "11.0",
            "OTHER_CFLAGS": ["-O3", "-march=native", "-ffp-contract=fast"],
            "OTHER_CPLUSPLUSFLAGS": ["-O3", "-march=native", "-ffp-contract=fast"]
          }
        }]
      ]
    }
  ]
}
