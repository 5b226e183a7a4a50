import MeshIdentity
import MeshWire

/// Link datagram formats (docs/links.md). The first byte is the message type; its values lie outside the
/// ranges RFC 7983 gives STUN (0–3), DTLS (20–63) and RTP (128–191), so STUN can share the port later.
/// (0xE4 is the DHT's.)
public enum LinkMessageType: UInt8, Sendable {
    case handshakeInit = 0xE1
    case handshakeResponse = 0xE2
    case transport = 0xE3
    /// The responder's answer to an initiation it will not work on yet: a cookie for mac2 (and its address).
    case cookieReply = 0xE5
    /// The responder refused an initiation for a reason the initiator should hear about (its clock).
    case refusal = 0xE6
}

public enum LinkWire {
    public static let version: UInt8 = 2
    public static let ephemeralBytes = 32
    public static let signatureBytes = 65
    public static let macBytes = 16
    /// type, version, sender index, responder address, ephemeral, timestamp: what the initiator signs.
    public static let initSignedBytes = 1 + 1 + 4 + WalletAddress.byteCount + ephemeralBytes + 8
    /// The signed part and the signature: the part of an initiation the response and the keys cover.
    public static let initTranscriptBytes = initSignedBytes + signatureBytes
    /// transcript, mac1, mac2.
    public static let initBytes = initTranscriptBytes + 2 * macBytes
    /// type, version, sender index, receiver index, ephemeral, signature.
    public static let responseBytes = 1 + 1 + 4 + 4 + ephemeralBytes + signatureBytes
    /// type, receiver index, responder address, cookie, tag.
    public static let cookieReplyBytes = 1 + 4 + WalletAddress.byteCount + macBytes + macBytes
    /// type, receiver index, reason, responder clock (ms), tag.
    public static let refusalBytes = 1 + 4 + 1 + 8 + macBytes
    /// type, receiver index, counter.
    public static let transportHeaderBytes = 1 + 4 + 8
    /// Smallest transport datagram: header and the AEAD tag of an empty payload.
    public static let transportMinBytes = transportHeaderBytes + LinkCrypto.tagBytes
    /// Counters stop well before the nonce space ends; a session is rekeyed long before.
    public static let counterLimit: UInt64 = 1 << 60
    /// The responder address of an initiation to a node known only by its endpoint (an unpinned `--peer`).
    public static let anyResponder = [UInt8](repeating: 0, count: WalletAddress.byteCount)

    static let initLabel = Array("meshlink/v2/init".utf8)
    static let responseLabel = Array("meshlink/v2/response".utf8)
    static let keysLabel = Array("meshlink/v2/keys".utf8)
    static let mac1Label = Array("meshlink/v2/mac1".utf8)
}

/// A parsed handshake initiation: the initiator's ephemeral X25519 key and the node it is meant for, signed by
/// its node key; then two cheap MACs (docs/links.md, "Before any signature work").
struct HandshakeInit {
    let senderIndex: UInt32
    /// The intended responder's node address, or `LinkWire.anyResponder`.
    let responder: [UInt8]
    let ephemeral: [UInt8]
    let timestampMs: UInt64
    let signature: [UInt8]
    /// What the response signature and the session keys cover: the signed part and the signature (the MACs are
    /// not part of it: mac2 may change). Kept as received, so the checks before signature work copy nothing.
    let transcript: [UInt8]
    let mac1: [UInt8]
    var mac2: [UInt8]

    static func signedPart(senderIndex: UInt32, responder: [UInt8], ephemeral: [UInt8], timestampMs: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: LinkWire.initBytes)
        w.write(LinkMessageType.handshakeInit.rawValue)
        w.write(LinkWire.version)
        w.write(senderIndex)
        w.write(bytes: responder)
        w.write(bytes: ephemeral)
        w.write(timestampMs)
        return w.bytes
    }

    static func digest(signedPart: [UInt8]) -> [UInt8] { Keccak.hash256(LinkWire.initLabel + signedPart) }

    /// Builds a whole initiation: signs it, then adds mac1 (keyed by the responder) and mac2 (keyed by a cookie).
    init(senderIndex: UInt32, responder: [UInt8], ephemeral: [UInt8], timestampMs: UInt64, signer: PrivateKey, cookie: [UInt8]?) {
        let signed = Self.signedPart(senderIndex: senderIndex, responder: responder, ephemeral: ephemeral, timestampMs: timestampMs)
        let signature = signer.sign(digest: Self.digest(signedPart: signed)).bytes
        let mac1 = HandshakeMAC.mac(key: HandshakeMAC.mac1Key(responder: responder), signed + signature)
        let mac2 = cookie.map { HandshakeMAC.mac(key: $0, signed + signature + mac1) } ?? [UInt8](repeating: 0, count: LinkWire.macBytes)
        self.init(senderIndex: senderIndex, responder: responder, ephemeral: ephemeral, timestampMs: timestampMs,
                  signature: signature, transcript: signed + signature, mac1: mac1, mac2: mac2)
    }

    private init(senderIndex: UInt32, responder: [UInt8], ephemeral: [UInt8], timestampMs: UInt64, signature: [UInt8],
                 transcript: [UInt8], mac1: [UInt8], mac2: [UInt8]) {
        self.senderIndex = senderIndex
        self.responder = responder
        self.ephemeral = ephemeral
        self.timestampMs = timestampMs
        self.signature = signature
        self.transcript = transcript
        self.mac1 = mac1
        self.mac2 = mac2
    }

    init?(parsing bytes: [UInt8]) {
        guard bytes.count == LinkWire.initBytes else { return nil }
        var r = ByteReader(bytes, offset: 1)
        guard r.readUInt8() == LinkWire.version,
              let index = r.readUInt32(),
              let responder = r.readBytes(WalletAddress.byteCount),
              let eph = r.readBytes(LinkWire.ephemeralBytes),
              let ts = r.readUInt64(),
              let sig = r.readBytes(LinkWire.signatureBytes),
              let mac1 = r.readBytes(LinkWire.macBytes),
              let mac2 = r.readBytes(LinkWire.macBytes) else { return nil }
        self.init(senderIndex: index, responder: responder, ephemeral: eph, timestampMs: ts, signature: sig,
                  transcript: Array(bytes[..<LinkWire.initTranscriptBytes]), mac1: mac1, mac2: mac2)
    }

    var signedPart: [UInt8] { Array(transcript[..<LinkWire.initSignedBytes]) }
    var serialized: [UInt8] { transcript + mac1 + mac2 }
    var isForAnyResponder: Bool { responder == LinkWire.anyResponder }

    /// This initiation again with mac2 keyed by `cookie` (and, for an initiation to any node, re-signed for `responder`).
    func retried(responder newResponder: [UInt8], cookie: [UInt8], signer: PrivateKey) -> HandshakeInit {
        if newResponder == responder {
            var copy = self
            copy.mac2 = HandshakeMAC.mac(key: cookie, transcript + mac1)
            return copy
        }
        return HandshakeInit(senderIndex: senderIndex, responder: newResponder, ephemeral: ephemeral, timestampMs: timestampMs,
                             signer: signer, cookie: cookie)
    }
}

/// A parsed handshake response: the responder's ephemeral key, signed together with the initiation's transcript.
struct HandshakeResponse {
    var senderIndex: UInt32
    var receiverIndex: UInt32
    var ephemeral: [UInt8]
    var signature: Signature

    static func signedPart(senderIndex: UInt32, receiverIndex: UInt32, ephemeral: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: LinkWire.responseBytes)
        w.write(LinkMessageType.handshakeResponse.rawValue)
        w.write(LinkWire.version)
        w.write(senderIndex)
        w.write(receiverIndex)
        w.write(bytes: ephemeral)
        return w.bytes
    }

    /// The responder signs the initiation it answers too, binding both ephemerals to both identities.
    static func digest(initTranscript: [UInt8], signedPart: [UInt8]) -> [UInt8] {
        Keccak.hash256(LinkWire.responseLabel + initTranscript + signedPart)
    }

    init(senderIndex: UInt32, receiverIndex: UInt32, ephemeral: [UInt8], signature: Signature) {
        self.senderIndex = senderIndex
        self.receiverIndex = receiverIndex
        self.ephemeral = ephemeral
        self.signature = signature
    }

    init?(parsing bytes: [UInt8]) {
        guard bytes.count == LinkWire.responseBytes else { return nil }
        var r = ByteReader(bytes, offset: 1)
        guard r.readUInt8() == LinkWire.version,
              let sender = r.readUInt32(),
              let receiver = r.readUInt32(),
              let eph = r.readBytes(LinkWire.ephemeralBytes),
              let sigBytes = r.readBytes(LinkWire.signatureBytes),
              let sig = Signature(bytes: sigBytes) else { return nil }
        self.init(senderIndex: sender, receiverIndex: receiver, ephemeral: eph, signature: sig)
    }

    var signedPart: [UInt8] { Self.signedPart(senderIndex: senderIndex, receiverIndex: receiverIndex, ephemeral: ephemeral) }
    var serialized: [UInt8] { signedPart + signature.bytes }
}

/// The responder's cookie (for mac2) and node address, sent instead of a response; its tag is keyed by the
/// initiation's mac1, so only a node that saw the initiation can make one.
struct CookieReply {
    var receiverIndex: UInt32
    var responder: [UInt8]
    var cookie: [UInt8]

    init(receiverIndex: UInt32, responder: [UInt8], cookie: [UInt8]) {
        self.receiverIndex = receiverIndex
        self.responder = responder
        self.cookie = cookie
    }

    /// Parses and checks the tag against the mac1 of the initiation it answers (`mac1For` looks it up by index).
    init?(parsing bytes: [UInt8], mac1For: (UInt32) -> [UInt8]?) {
        guard bytes.count == LinkWire.cookieReplyBytes else { return nil }
        var r = ByteReader(bytes, offset: 1)
        guard let index = r.readUInt32(), let mac1 = mac1For(index),
              let responder = r.readBytes(WalletAddress.byteCount),
              let cookie = r.readBytes(LinkWire.macBytes),
              HandshakeMAC.equal(Array(bytes[(LinkWire.cookieReplyBytes - LinkWire.macBytes)...]),
                                 HandshakeMAC.mac(key: mac1, Array(bytes[..<(LinkWire.cookieReplyBytes - LinkWire.macBytes)])))
        else { return nil }
        self.init(receiverIndex: index, responder: responder, cookie: cookie)
    }

    func serialized(initMac1: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: LinkWire.cookieReplyBytes)
        w.write(LinkMessageType.cookieReply.rawValue)
        w.write(receiverIndex)
        w.write(bytes: responder)
        w.write(bytes: cookie)
        return w.bytes + HandshakeMAC.mac(key: initMac1, w.bytes)
    }
}

/// Why a responder refused an initiation, told to the initiator (docs/links.md).
enum RefusalReason: UInt8 {
    /// The initiation's timestamp is outside the responder's accepted window; the reply carries its clock.
    case clock = 1
}

/// A refusal the initiator can log; like the cookie reply, tagged with the initiation's mac1 and smaller than it.
struct HandshakeRefusal {
    var receiverIndex: UInt32
    var reason: RefusalReason
    var responderClockMs: UInt64

    init(receiverIndex: UInt32, reason: RefusalReason, responderClockMs: UInt64) {
        self.receiverIndex = receiverIndex
        self.reason = reason
        self.responderClockMs = responderClockMs
    }

    init?(parsing bytes: [UInt8], mac1For: (UInt32) -> [UInt8]?) {
        guard bytes.count == LinkWire.refusalBytes else { return nil }
        var r = ByteReader(bytes, offset: 1)
        guard let index = r.readUInt32(), let mac1 = mac1For(index),
              let reason = r.readUInt8().flatMap(RefusalReason.init(rawValue:)),
              let clock = r.readUInt64(),
              HandshakeMAC.equal(Array(bytes[(LinkWire.refusalBytes - LinkWire.macBytes)...]),
                                 HandshakeMAC.mac(key: mac1, Array(bytes[..<(LinkWire.refusalBytes - LinkWire.macBytes)])))
        else { return nil }
        self.init(receiverIndex: index, reason: reason, responderClockMs: clock)
    }

    func serialized(initMac1: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: LinkWire.refusalBytes)
        w.write(LinkMessageType.refusal.rawValue)
        w.write(receiverIndex)
        w.write(reason.rawValue)
        w.write(responderClockMs)
        return w.bytes + HandshakeMAC.mac(key: initMac1, w.bytes)
    }
}

/// Messages inside an authenticated transport datagram. The first plaintext byte says which.
enum InnerType: UInt8 {
    case keepalive = 0
    case ping = 1
    case pong = 2
    /// The sender is shutting down: take the link down now rather than after the dead-link timeout.
    case close = 3
    case application = 16
}
