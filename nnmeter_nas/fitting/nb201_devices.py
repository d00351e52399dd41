"""nn-Meter's four devices as the NAS-Bench-201 predictor packages describe them.

Fusion rules (nn-Meter's ``fusion_rules.json`` format, ``MON`` 0: an operator whose output has
several consumers never fuses). TFLite 2.1 (CPU and GPU delegate) folds batch normalisation into
the preceding convolution or fully connected layer and fuses a following ReLU into the
convolution, fully connected layer or element-wise ADD that produces it ("fused activation
function"). OpenVINO 2019R2's Model Optimizer folds batch normalisation the same way and its
Myriad plugin fuses ReLU into the producing convolution and eltwise sum. So all four devices get
the same pairs: conv-bn, conv-relu, dwconv-bn, dwconv-relu, bn-relu, add-relu, fc-relu.
In NAS-Bench-201 networks this matters for the ReLU that opens a ``nor_conv`` edge: it is its
own kernel when the tensor it reads has several consumers, and fuses into the producing
convolution or addition when it is the only one.

``framework``/``hardware`` follow nn-Meter's predictor list.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..kernels.fusion_rules import FusionRules

_FUSED_PAIRS = [("conv", "bn"), ("conv", "relu"), ("dwconv", "bn"), ("dwconv", "relu"),
                ("bn", "relu"), ("add", "relu"), ("fc", "relu")]


def _rules(pairs) -> dict:
    rules = {f"BF_{a}_{b}": {"obey": True} for a, b in pairs}
    rules["MON"] = {"obey": 0}
    return rules


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    hardware: str
    framework: str
    fusion_rules: dict
    fusion_note: str

    def rules(self) -> FusionRules:
        return FusionRules.from_dict(self.fusion_rules)


_TFLITE_NOTE = ("TFLite 2.1 folds BatchNorm into the preceding conv/fc and fuses a following "
                "ReLU into the conv, fc or ADD producing it when that tensor has no other "
                "consumer (fused activation); MON=0.")
_OPENVINO_NOTE = ("OpenVINO 2019R2 Model Optimizer folds BatchNorm into conv/fc; the Myriad "
                  "plugin fuses ReLU into the producing convolution and eltwise sum when that "
                  "tensor has no other consumer; MON=0.")

DEVICES: dict[str, DeviceSpec] = {
    "cortexA76cpu_tflite21": DeviceSpec("cortexA76cpu_tflite21", "Pixel4, CortexA76 CPU",
                                        "TFLite 2.1", _rules(_FUSED_PAIRS), _TFLITE_NOTE),
    "adreno640gpu_tflite21": DeviceSpec("adreno640gpu_tflite21", "Mi9, Adreno 640 GPU",
                                        "TFLite 2.1 (GPU delegate)", _rules(_FUSED_PAIRS),
                                        _TFLITE_NOTE),
    "adreno630gpu_tflite21": DeviceSpec("adreno630gpu_tflite21", "Pixel3XL, Adreno 630 GPU",
                                        "TFLite 2.1 (GPU delegate)", _rules(_FUSED_PAIRS),
                                        _TFLITE_NOTE),
    "myriadvpu_openvino2019r2": DeviceSpec("myriadvpu_openvino2019r2",
                                           "Intel Movidius NCS2, Myriad VPU", "OpenVINO 2019R2",
                                           _rules(_FUSED_PAIRS), _OPENVINO_NOTE),
}
