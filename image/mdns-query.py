"""Ask the LAN for a .local name over mDNS, as a laptop's resolver does (boot-test.sh).

    python3 image/mdns-query.py esignbox.local 169.254.213.1 [seconds]

Sends an mDNS question (RFC 6762) for the name's A record out of the interface that has the
given address, every two seconds, and prints the first IPv4 address an answer gives for it;
exit 1 if none comes in time. A plain socket and a hand-made packet: the test needs nothing on
the host (no avahi, no nss-mdns) and sees exactly what the box sent.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

MDNS_GROUP, MDNS_PORT = "224.0.0.251", 5353
TYPE_A, CLASS_IN = 1, 1


def question(name: str) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return struct.pack(">6H", 0, 0, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", TYPE_A, CLASS_IN)


def read_name(packet: bytes, offset: int) -> tuple[str, int]:
    """The name at offset (following compression pointers) and the offset after it."""
    labels: list[str] = []
    end = None
    while True:
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            end = end if end is not None else offset + 2
            offset = struct.unpack(">H", packet[offset:offset + 2])[0] & 0x3FFF
            continue
        if length == 0:
            return ".".join(labels), (end if end is not None else offset + 1)
        labels.append(packet[offset + 1:offset + 1 + length].decode(errors="replace"))
        offset += 1 + length


def answers(packet: bytes, name: str) -> list[str]:
    """IPv4 addresses of A records for name in the answer and additional sections."""
    _id, _flags, qdcount, ancount, nscount, arcount = struct.unpack(">6H", packet[:12])
    offset = 12
    for _ in range(qdcount):
        offset = read_name(packet, offset)[1] + 4
    found = []
    for _ in range(ancount + nscount + arcount):
        owner, offset = read_name(packet, offset)
        rtype, _rclass, _ttl, length = struct.unpack(">HHIH", packet[offset:offset + 10])
        offset += 10
        if rtype == TYPE_A and length == 4 and owner.lower() == name.lower():
            found.append(socket.inet_ntoa(packet[offset:offset + 4]))
        offset += length
    return found


def main() -> int:
    name, interface_address = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + (float(sys.argv[3]) if len(sys.argv) > 3 else 60.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("", MDNS_PORT))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    socket.inet_aton(MDNS_GROUP) + socket.inet_aton(interface_address))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface_address))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    sock.settimeout(2.0)
    while time.monotonic() < deadline:
        sock.sendto(question(name), (MDNS_GROUP, MDNS_PORT))
        try:
            while True:
                packet, _peer = sock.recvfrom(9000)
                addresses = answers(packet, name) if packet[2] & 0x80 else []  # responses only
                if addresses:
                    print(addresses[0])
                    return 0
        except TimeoutError:
            continue
        except (IndexError, struct.error):
            continue  # a packet this reader cannot parse is not the answer
    return 1


if __name__ == "__main__":
    sys.exit(main())
