"""Engine decode speed under layouts, with and without a competing CPU hog."""
import asyncio, os, subprocess, sys, time, json
import httpx
URL = sys.argv[1]; LABEL = sys.argv[2]; HOG_CPU = sys.argv[3] if len(sys.argv) > 3 else None

async def burst(n=8, tokens=64):
    async with httpx.AsyncClient(base_url=URL, timeout=600) as c:
        async def one(i):
            r = await c.post("/v1/completions", json={"model": "qwen2.5-coder-0.5b-instruct", "prompt": f"Write a story number {i} about", "max_tokens": tokens, "ignore_eos": True, "temperature": 0})
            return r.json()["usage"]["completion_tokens"]
        t = time.monotonic(); toks = sum(await asyncio.gather(*(one(i) for i in range(n)))); return toks / (time.monotonic() - t)

def run(hog):
    p = None
    if hog:
        cmd = ["python3", "-c", "while True: pass"]
        if HOG_CPU: cmd = ["taskset", "-c", HOG_CPU] + cmd
        p = subprocess.Popen(cmd)
    try:
        asyncio.run(burst(2, 8))
        return [round(asyncio.run(burst()), 1) for _ in range(2)]
    finally:
        if p: p.kill()
print(json.dumps({"layout": LABEL, "quiet": run(False), "with_hog": run(True), "quiet_again": run(False)}))
