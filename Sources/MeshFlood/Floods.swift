import Foundation
import MeshDHT
import MeshIdentity
import MeshLink

/// A fast, seeded generator for the flood's bytes: the system CSPRNG costs a syscall per word, far too
/// slow for 60,000 datagrams a second, and nothing here needs secrecy (wyrand).
struct FastRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0xA076_1D64_78BD_642F
        let product = state.multipliedFullWidth(by: state ^ 0xE703_7ED1_A0B4_28DB)
        return product.high ^ product.low
    }

    mutating func fill(_ bytes: inout [UInt8], from start: Int, count: Int) {
        var offset = start
        while offset < start + count {
            var word = next()
            for _ in 0..<min(8, start + count - offset) {
                bytes[offset] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                offset += 1
            }
        }
    }

    mutating func write<T: FixedWidthInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
        var big = value.bigEndian
        withUnsafeBytes(of: &big) { raw in
            for (i, byte) in raw.enumerated() { bytes[offset + i] = byte }
        }
    }
}

/// Random signatures that parse and recover a public key: each has an r that is the x coordinate of a
/// curve point (taken from real signatures made once at start-up) and a fresh random low s. The key
/// recovered from (r, s, v) over a digest is r⁻¹(sR − eG): a new random key for every s, so every datagram
/// presents a new node id or wallet, and the receiver pays for a full recovery.
struct RandomSignatures {
    private let rValues: [[UInt8]]

    init(count: Int = 64) {
        let key = PrivateKey()
        rValues = (0..<count).map { _ in Array(key.sign(digest: (0..<32).map { _ in UInt8.random(in: 0...255) }).bytes[0..<32]) }
    }

    /// Writes a signature into `bytes` at `offset` (65 bytes: r, s, v).
    func write(into bytes: inout [UInt8], at offset: Int, rng: inout FastRandom) {
        let r = rValues[Int(rng.next() % UInt64(rValues.count))]
        for i in 0..<32 { bytes[offset + i] = r[i] }
        rng.fill(&bytes, from: offset + 32, count: 32)
        // s below n/2 (canonical, low s) and not zero.
        bytes[offset + 32] = bytes[offset + 32] & 0x3F | 0x01
        bytes[offset + 64] = 27 + UInt8(rng.next() & 1)
    }
}

/// Where the fields of a datagram sit, taken from the project's own encoders (a template is built with
/// them and checked against these offsets at start-up, so a format change stops the flooder with a clear
/// message instead of sending stale bytes).
enum Layout {
    /// Handshake initiation (links v2): type, version, sender index (u32), responder address, ephemeral,
    /// timestamp (u64 ms), signature; then mac1 over all of that (the transcript) and mac2.
    static let initIndex = 2
    static let initResponder = initIndex + 4
    static let initEphemeral = initResponder + WalletAddress.byteCount
    static let initTimestamp = initEphemeral + LinkWire.ephemeralBytes
    static let initSignature = initTimestamp + 8
    static let initMac1 = initSignature + LinkWire.signatureBytes
    static let initMac2 = initMac1 + LinkWire.macBytes
    /// DHT datagram: marker, version, type, txid (u64), timestamp (u64 ms), body, signature (last 65 bytes).
    static let dhtTxid = 3
    static let dhtTimestamp = dhtTxid + 8
    static let dhtBody = DHTWire.headerBytes
}

/// The flooder's view of the node it floods, for the link layer that builds its template initiation.
struct FloodEndpoint: LinkEndpoint {
    let ip: [UInt8]
    let port: UInt16
    var cookieBytes: [UInt8] { ip + [UInt8(port >> 8), UInt8(port & 0xFF)] }
    var rateLimitKey: [UInt8] { ip }
    var description: String { ip.map(String.init).joined(separator: ".") + ":\(port)" }
}

struct FloodError: Error, CustomStringConvertible { let description: String }

/// Makes the datagrams of one kind of flood. `next` is cheap: templates are built once with the project's
/// encoders and only the per-datagram fields are rewritten.
struct Flood {
    enum Kind: String, CaseIterable {
        case linkInit = "link-init"
        case dhtRequest = "dht-request"
        case store
        case junk
    }

    /// How link-init floods fill mac1.
    enum Mac1 {
        /// Right for the named node (the attacker looked its address up): the initiation reaches the cookie
        /// and rate-limit stages.
        case valid
        /// Random bytes (an attacker who does not know the address): stopped at mac1.
        case random
    }

    private enum Source {
        case linkInit(template: [UInt8], mac1Key: [UInt8]?)
        case dhtRequest(template: [UInt8])
        case store(pool: [[UInt8]], next: Int)
        case junk(noise: [UInt8], maxBytes: Int)
    }

    private var source: Source
    private let signatures: RandomSignatures

    /// `poolSize` STORE datagrams (each a record of its own throw-away wallet) are made before the flood.
    /// Link initiations name `targetNode` (the all-zero "any node" address when nil, which only `.random` mac1 allows).
    init(kind: Kind, target: FloodEndpoint, targetNode: WalletAddress?, mac1: Mac1 = .valid, poolSize: Int, junkMaxBytes: Int,
         nowMs: Int64, rng: inout FastRandom) throws {
        signatures = RandomSignatures()
        switch kind {
        case .linkInit:
            guard targetNode != nil || mac1 == .random else {
                throw FloodError(description: "link-init with a valid mac1 needs the target's node address (--target-node)")
            }
            let responder = targetNode ?? WalletAddress(bytes: LinkWire.anyResponder)!
            var links = LinkManager<FloodEndpoint>(identity: PrivateKey())
            let actions = links.dialOnce(target, pinned: responder, now: nowMs)
            guard case .send(let template, _)? = actions.first, template.count == LinkWire.initBytes,
                  Layout.initMac2 + LinkWire.macBytes == LinkWire.initBytes,
                  Layout.initMac1 == LinkWire.initTranscriptBytes,
                  template.first == LinkMessageType.handshakeInit.rawValue,
                  Array(template[Layout.initResponder..<Layout.initEphemeral]) == responder.bytes,
                  template[Layout.initMac1...].elementsEqual(
                      HandshakeMAC.mac(key: HandshakeMAC.mac1Key(responder: responder.bytes), Array(template[..<Layout.initMac1]))
                      + [UInt8](repeating: 0, count: LinkWire.macBytes))
            else { throw FloodError(description: "the link handshake initiation changed; update Layout in MeshFlood") }
            source = .linkInit(template: template, mac1Key: mac1 == .valid ? HandshakeMAC.mac1Key(responder: responder.bytes) : nil)
        case .dhtRequest:
            let packet = DHTPacket(txid: 0, message: .findNode(target: NodeID.random(using: &rng)))
            let template = DHTWire.seal(packet, timestampMs: nowMs, identity: PrivateKey())
            guard template.count == DHTWire.overheadBytes + NodeID.byteCount else {
                throw FloodError(description: "the DHT FIND_NODE datagram changed; update Layout in MeshFlood")
            }
            source = .dhtRequest(template: template)
        case .store:
            let envelope = PrivateKey()
            let pool = (0..<max(poolSize, 1)).map { i in
                let record = PresenceRecord.make(
                    wallet: PrivateKey(), homeNode: NodeID.random(using: &rng),
                    endpoints: [DHTEndpoint(ip: [127, 1, UInt8(truncatingIfNeeded: i >> 8), UInt8(truncatingIfNeeded: i)], port: 40_000)!],
                    relays: [], sequence: 1, expiresAtMs: nowMs + 3_600_000)
                return DHTWire.seal(DHTPacket(txid: 0, message: .store(record)), timestampMs: nowMs, identity: envelope)
            }
            source = .store(pool: pool, next: 0)
        case .junk:
            var noise = [UInt8](repeating: 0, count: 1 << 20)
            rng.fill(&noise, from: 0, count: noise.count)
            source = .junk(noise: noise, maxBytes: junkMaxBytes)
        }
    }

    /// The next datagram, stamped with `nowMs` where the format carries a timestamp.
    mutating func next(nowMs: Int64, rng: inout FastRandom) -> [UInt8] {
        let stamp = UInt64(max(nowMs, 0))
        switch source {
        case .linkInit(let template, let mac1Key):
            var bytes = template
            rng.write(UInt32(truncatingIfNeeded: rng.next()), into: &bytes, at: Layout.initIndex)
            rng.fill(&bytes, from: Layout.initEphemeral, count: LinkWire.ephemeralBytes)
            rng.write(stamp, into: &bytes, at: Layout.initTimestamp)
            signatures.write(into: &bytes, at: Layout.initSignature, rng: &rng)
            if let mac1Key {
                let mac1 = HandshakeMAC.mac(key: mac1Key, Array(bytes[..<Layout.initMac1]))
                bytes.replaceSubrange(Layout.initMac1..<Layout.initMac2, with: mac1)
            } else {
                rng.fill(&bytes, from: Layout.initMac1, count: LinkWire.macBytes)
            }
            return bytes
        case .dhtRequest(let template):
            var bytes = template
            rng.write(rng.next(), into: &bytes, at: Layout.dhtTxid)
            rng.write(stamp, into: &bytes, at: Layout.dhtTimestamp)
            rng.fill(&bytes, from: Layout.dhtBody, count: NodeID.byteCount)
            signatures.write(into: &bytes, at: bytes.count - Signature.byteCount, rng: &rng)
            return bytes
        case .store(let pool, let index):
            var bytes = pool[index]
            source = .store(pool: pool, next: (index + 1) % pool.count)
            rng.write(rng.next(), into: &bytes, at: Layout.dhtTxid)
            rng.write(stamp, into: &bytes, at: Layout.dhtTimestamp)
            signatures.write(into: &bytes, at: bytes.count - Signature.byteCount, rng: &rng)
            return bytes
        case .junk(let noise, let maxBytes):
            let count = 1 + Int(rng.next() % UInt64(maxBytes))
            let start = Int(rng.next() % UInt64(noise.count - count))
            return Array(noise[start..<start + count])
        }
    }
}
