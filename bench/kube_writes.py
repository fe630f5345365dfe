"""Footprint status writes through the operator's API client, against the client it replaced.

The operator writes up to ``max_writes_per_s`` footprint statuses per second, from its asyncio loop. This runs a
kmock API emulator, creates ``--objects`` footprints, then merge-patches every status ``--rounds`` times with
``--concurrency`` requests in flight (the operator benchmark's emulator, with O(1) lookups) through:

- ``jouleledger.kube.api.KubeApi``: the official ``kubernetes`` client (urllib3) in a thread pool of that size;
- the hand-written httpx transport it replaced (one ``httpx.AsyncClient`` request per write, as the old
  ``KubeApi`` sent them; kept here only for this comparison);
- ``kubernetes.aio`` (the official client's aiohttp flavour), for reference.

Printed: writes per second (median of the rounds) and the ratios. All share this machine's cores with the
emulator, so only the ratios carry over.

    flock /tmp/jl-bench.lock .venv/bin/python -m bench.kube_writes [--objects 200] [--rounds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
import kmock
import kopf
from kubernetes.aio import client as aio_client
from tests._kube_emulator import IndexedEmulator, register_resources

from jouleledger.kube.api import MERGE_PATCH, KubeApi, build_api_client

GROUP, VERSION, PLURAL = "jouleledger.io", "v1alpha1", "workloadfootprints"
Write = Callable[[str, dict[str, object]], Awaitable[object]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if min(args.objects, args.rounds, args.concurrency) < 1:
        parser.error("--objects, --rounds and --concurrency must be at least 1")
    return args


def body(index: int, round_: int) -> dict[str, object]:
    return {"status": {"energyMillijoules": index * 1000 + round_, "gpuSeconds": float(round_)}}


def status_path(index: int) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/ml/{PLURAL}/fp-{index}/status"


async def timed(write: Write, objects: int, concurrency: int, round_: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with slots:
            await write(status_path(index), body(index, round_))

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(objects)))
    return objects / (time.perf_counter() - started)


async def with_kube_api(server: str, objects: int, concurrency: int, round_: int) -> float:
    info = kopf.ConnectionInfo(server=server)
    async with KubeApi(build_api_client(info, concurrency=concurrency), concurrency=concurrency) as api:
        return await timed(api.merge_patch, objects, concurrency, round_)


async def with_httpx(server: str, objects: int, concurrency: int, round_: int) -> float:
    """The replaced transport: what the hand-written client sent for one merge patch."""
    async with httpx.AsyncClient(base_url=server, limits=httpx.Limits(max_connections=concurrency)) as http:

        async def write(path: str, patch: dict[str, object]) -> object:
            headers = {"Content-Type": MERGE_PATCH, "Accept": "application/json"}
            response = await http.request("PATCH", path, json=patch, headers=headers)
            response.raise_for_status()
            return response.json()

        return await timed(write, objects, concurrency, round_)


async def with_aio(server: str, objects: int, concurrency: int, round_: int) -> float:
    configuration = aio_client.Configuration(host=server)
    configuration.connection_pool_maxsize = concurrency
    async with aio_client.ApiClient(configuration) as api:

        async def write(path: str, patch: dict[str, object]) -> object:
            headers = {"Content-Type": MERGE_PATCH, "Accept": "application/json"}
            request = await api.param_serialize(method="PATCH", resource_path=path, header_params=headers, body=patch)
            response = await api.call_api(*request)
            return await response.read()

        return await timed(write, objects, concurrency, round_)


async def main(args: argparse.Namespace) -> int:
    variants = {
        "KubeApi (kubernetes client, urllib3 in threads)": with_kube_api,
        "replaced httpx client (asyncio)": with_httpx,
        "kubernetes.aio (aiohttp), reference": with_aio,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    async with IndexedEmulator() as emulator, kmock.Server(emulator):
        register_resources(emulator)
        server = str(emulator.url).rstrip("/")
        async with KubeApi(build_api_client(kopf.ConnectionInfo(server=server))) as api:
            for i in range(args.objects):
                await api.create(
                    f"/apis/{GROUP}/{VERSION}/namespaces/ml/{PLURAL}",
                    {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadFootprint", "metadata": {"name": f"fp-{i}"}},
                )
        for round_ in range(args.rounds):
            for name, variant in variants.items():
                rates[name].append(await variant(server, args.objects, args.concurrency, round_))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ours = medians[next(iter(variants))]
    print(
        f"footprint status merge patches, {args.objects} objects x {args.rounds} rounds, {args.concurrency} in flight"
    )
    for name, rate in medians.items():
        print(f"  {name:50s} {rate:8.0f} writes/s (median); KubeApi / this: {ours / rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
