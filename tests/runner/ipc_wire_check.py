"""CUDA IPC check of sgtui/runner/trainer/ipc_wire.py with plain torch (run by tests/runner/test_full_sync_gpu.py
in an interpreter that has torch with CUDA; the repository root as the working directory): a producer packs
bf16/fp32 tensors (one of odd length, so later offsets are not 4-byte aligned) into one CUDA buffer and
serializes it in SGLang's and vLLM's wire formats; a consumer process rebuilds them as the engines do (SGLang
0.5.17: unpickle with its device-UUID patch of rebuild_cuda_tensor, then the flattened bucket's byte ranges;
vLLM 0.26: packed_ipc_consumer's rebuild under the consumer's own GPU UUID, then split by byte sizes) and
returns checksums. Measured 2026-12-05 on an H100 (torch 2.11.0+cu130): both bit for bit, 8.5 s."""
import json
import os
import subprocess
import sys

CONSUMER = r'''
import base64, json, pickle, sys, torch
from torch.multiprocessing import reductions
orig = reductions.rebuild_cuda_tensor
def dev_from(x):
    if isinstance(x, str):
        for i in range(torch.cuda.device_count()):
            if str(torch.cuda.get_device_properties(i).uuid) == x:
                return i
        raise ValueError("no device " + x)
    return x
def patched(*args):  # sglang.srt.utils.patch_torch._rebuild_cuda_tensor_modified
    args = list(args); args[6] = dev_from(args[6]); return orig(*args)
reductions.rebuild_cuda_tensor = patched
d = json.loads(sys.stdin.readline())
obj = pickle.loads(base64.b64decode(d["sg"]))
flat, meta = obj["flattened_tensor"], obj["metadata"]
sg = [[m.name, float(flat[m.start_idx:m.end_idx].view(m.dtype).reshape(m.shape).double().sum())] for m in meta]
u = d["vl"]
handles = pickle.loads(base64.b64decode(u["ipc_handles_pickled"]))
args = list(handles[str(torch.cuda.get_device_properties(0).uuid)]); args[6] = 0
packed = orig(*args)[:sum(u["tensor_sizes"])]
vl = [[n, float(p.contiguous().view(getattr(torch, dn)).view(*s).double().sum())]
      for n, p, dn, s in zip(u["names"], packed.split(u["tensor_sizes"]), u["dtype_names"], u["shapes"])]
print(json.dumps({"sg": sg, "vl": vl}), flush=True)
'''

sys.path.insert(0, os.getcwd())
import torch  # noqa: E402

from sgtui.runner.trainer import hf_export as hx  # noqa: E402
from sgtui.runner.trainer import ipc_wire  # noqa: E402

print("torch", torch.__version__, torch.cuda.get_device_name(0))
dev = torch.device("cuda", 0)
g = torch.Generator(device=dev).manual_seed(0)
tensors = [("model.embed_tokens.weight", torch.randn(1000, 64, device=dev, generator=g).to(torch.bfloat16)),
           ("model.norm.weight", torch.randn(64, device=dev, generator=g)),
           ("model.layers.0.self_attn.q_proj.bias", torch.randn(63, device=dev, generator=g).to(torch.bfloat16)),
           ("lm_head.weight", torch.randn(1000, 64, device=dev, generator=g).to(torch.bfloat16))]
buf = torch.empty(sum(hx.nbytes(t) for _, t in tensors), dtype=torch.uint8, device=dev)
packed = hx.pack(tensors, buf)
torch.cuda.synchronize()
msg = {"sg": ipc_wire.sglang_payload(packed), "vl": ipc_wire.vllm_update(packed, ipc_wire.vllm_handle(packed))}
want = [[n, float(t.double().sum())] for n, t in tensors]
p = subprocess.run([sys.executable, "-c", CONSUMER], input=json.dumps(msg) + "\n", capture_output=True, text=True,
                   timeout=120)
print("consumer rc", p.returncode, p.stderr[-2000:])
got = json.loads(p.stdout.strip().splitlines()[-1])
print("want", want)
print("sglang", got["sg"] == want, "vllm", got["vl"] == want)
print("RESULT", "OK" if got["sg"] == want and got["vl"] == want else "MISMATCH")
