"""The kernel inventory's ``ops`` (``sandbox/record/kernels.py``): the ATen ops each kernel fuses,
read from the generated module's text alone (shapes of Inductor's output in torch 2.13.0)."""

from __future__ import annotations

from sandbox.record import kernels

# A CPU module: no comment above a cpp kernel, so its ops come from its name.
CPP_MODULE = """
from torch._inductor.select_algorithm import extern_kernels
async_compile = AsyncCompile()


cpp_fused_add_native_layer_norm_relu_0 = async_compile.cpp_pybinding(['float*', 'float*'], r'''
#include <torch/csrc/inductor/cpp_prefix.h>
extern "C"  void  kernel(float* in_out_ptr0, float* out_ptr1)
{
}
''')


cpp_fused__to_copy_sum_1 = async_compile.cpp_pybinding(['float*'], r'''
extern "C"  void  kernel(float* out_ptr0)
{
}
''')


async_compile.wait(globals())

    def call(self, args):
        # Topologically Sorted Source Nodes: [matmul], Original ATen: [aten.mm]
        extern_kernels.mm(arg0_1, arg1_1, out=buf0)
        cpp_fused_add_native_layer_norm_relu_0(buf2, buf5)
        cpp_fused__to_copy_sum_1(buf4)
        buf6 = torch.ops.aten.convolution_backward.default(buf4, arg0_1)
"""

# A GPU module: Inductor writes the kernel's origins in the comment lines above its definition.
TRITON_MODULE = """
async_compile = AsyncCompile()


# kernel path: /tmp/torchinductor/ab/cabcdef.py
# Topologically Sorted Source Nodes: [layer_norm, relu], Original ATen: [aten.native_layer_norm, aten.relu]
# Source node to ATen node mapping:
#   layer_norm => add, mul
# Graph fragment:
#   %relu : [num_users=1] = call_function[target=torch.ops.aten.relu.default](args = (%x,))
triton_per_fused_native_layer_norm_relu_0 = async_compile.triton('triton_per_fused_native_layer_norm_relu_0', '''
import triton
@triton.jit
def triton_per_fused_native_layer_norm_relu_0(in_ptr0, xnumel):
    pass
''', device_str='cuda')


triton_poi_fused_sin_1 = async_compile.triton('triton_poi_fused_sin_1', '''
import triton
# Original ATen: [aten.cos]  (inside the source: not the kernel's comment)
''', device_str='cuda')
"""


def _ops(source: str) -> dict[str, list[str]]:
    return {k["name"]: k["ops"] for k in kernels.inventory(source)}


def test_ops_from_kernel_names_and_extern_calls() -> None:
    assert _ops(CPP_MODULE) == {
        # Multi-word ops come out of a name split into words (the same on both sides of a comparison).
        "cpp_fused_add_native_layer_norm_relu_0": ["add", "native", "layer", "norm", "relu"],
        "cpp_fused__to_copy_sum_1": ["to", "copy", "sum"],
        "extern_kernels.mm": ["mm"],
        "torch.ops.aten.convolution_backward.default": ["convolution_backward"],
    }


def test_ops_from_the_original_aten_comment_above_a_kernel() -> None:
    assert _ops(TRITON_MODULE) == {
        "triton_per_fused_native_layer_norm_relu_0": ["native_layer_norm", "relu"],
        # The previous kernel's comment belongs to it; a string inside a source is no comment.
        "triton_poi_fused_sin_1": ["sin"],
    }


def test_kernel_ops_of_a_name_alone() -> None:
    assert kernels.kernel_ops("triton_red_fused__softmax_backward_data_3") == ["softmax", "backward", "data"]
    assert kernels.kernel_ops("cpp_fused_relu") == ["relu"]  # no trailing number
    assert kernels.kernel_ops("kernel_without_fusion_0") == []
    assert kernels.kernel_ops("cpp_fused_0") == []
    text = "# x, Original ATen: [aten.add, prims.fma]\n"
    assert kernels.kernel_ops("triton_poi_fused_add_fma_0", text, 0, len(text)) == ["add", "prims.fma"]


def test_call_sites_counted_after_the_kernel_source() -> None:
    """A Triton kernel's source defines ``def <its name>(``: only the wrapper's calls count (a GPU
    store once said 2 calls for a kernel its profiled call launched once)."""
    module = TRITON_MODULE + (
        "\n\ndef call(args):\n"
        "    triton_per_fused_native_layer_norm_relu_0.run(buf0, 64, stream=stream0)\n"
        "    triton_poi_fused_sin_1.run(buf1, 8, stream=stream0)\n"
        "    triton_poi_fused_sin_1.run(buf2, 8, stream=stream0)\n"
    )
    calls = {k["name"]: k["calls"] for k in kernels.inventory(module)}
    assert calls == {"triton_per_fused_native_layer_norm_relu_0": 1, "triton_poi_fused_sin_1": 2}
    assert {k["name"]: k["calls"] for k in kernels.inventory(CPP_MODULE)} == {
        "cpp_fused_add_native_layer_norm_relu_0": 1,
        "cpp_fused__to_copy_sum_1": 1,
        "extern_kernels.mm": 1,
        "torch.ops.aten.convolution_backward.default": 1,
    }
