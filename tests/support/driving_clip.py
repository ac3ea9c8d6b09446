"""A long driving clip for tests, made in well under a second: a short real clip's packets
repeated back to back into a new container (no decoding or encoding)."""

from __future__ import annotations

from pathlib import Path

import av


def looped_clip(source: Path, target: Path, loops: int) -> Path:
    """`source`'s video stream `loops` times in a row, written to `target` (an .mp4). Each loop's
    packets are shifted by the length of the ones before, so the clip plays (and decodes) as one
    continuous video `loops` times as long. `source` must start on a key frame (any mp4 does)."""
    with av.open(str(source)) as reader:
        stream = reader.streams.video[0]
        packets = [packet for packet in reader.demux(stream) if packet.size]
        span = max(p.pts for p in packets) - min(p.pts for p in packets) + (packets[1].pts - packets[0].pts
                                                                             if len(packets) > 1 else 1)
        with av.open(str(target), "w") as writer:
            out = writer.add_stream_from_template(stream)
            for loop in range(loops):
                for packet in packets:
                    shifted = av.Packet(bytes(packet))
                    shifted.pts = packet.pts + loop * span
                    shifted.dts = packet.dts + loop * span
                    shifted.time_base = packet.time_base
                    shifted.is_keyframe = packet.is_keyframe
                    shifted.stream = out
                    writer.mux(shifted)
    return target
