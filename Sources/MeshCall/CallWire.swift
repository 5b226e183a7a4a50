import MeshIdentity
import MeshWire

/// A call's identifier: 64 random bits, shown as 16 hex digits.
public struct CallID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let raw: UInt64
    public init(raw: UInt64) { self.raw = raw }
    public var description: String { Hex.padded(raw) }
    public init?(hex: String) {
        guard hex.count == 16, let value = UInt64(hex, radix: 16) else { return nil }
        raw = value
    }
    public static func < (a: CallID, b: CallID) -> Bool { a.raw < b.raw }
    /// A fresh id from the system's CSPRNG.
    public static func random() -> CallID { CallID(raw: UInt64(SecureRandom.uint32()) << 32 | UInt64(SecureRandom.uint32())) }
}

/// Why a call ended or was refused; one byte on the wire.
public enum CallEndReason: UInt8, Sendable, Codable, CustomStringConvertible {
    case normal = 0
    case declined = 1
    case busy = 2
    case unknownCallee = 3
    case noResponse = 4
    case noAnswer = 5
    case mediaTimeout = 6
    case badSignature = 7
    case linkLost = 8
    case failed = 9
    case staleOffer = 10
    /// The caller's node moved the call to the wallet the callee transferred it to.
    case transferred = 11

    public var description: String {
        switch self {
        case .normal: "hangup"
        case .declined: "declined"
        case .busy: "busy"
        case .unknownCallee: "callee not hosted there"
        case .noResponse: "no response"
        case .noAnswer: "no answer"
        case .mediaTimeout: "media timeout"
        case .badSignature: "bad signature"
        case .linkLost: "link lost"
        case .failed: "failed"
        case .staleOffer: "stale offer (are both clocks set?)"
        case .transferred: "transferred"
        }
    }
}

/// Call signalling messages (docs/calls.md). Offer and answer are signed by the wallets, so a node that
/// carries them can neither forge a caller nor substitute the key-agreement keys.
public enum CallMessage: Equatable, Sendable {
    case offer(Offer)
    case ringing(CallID)
    case answer(Answer)
    case reject(CallID, CallEndReason)
    case hangup(CallID, CallEndReason)

    public struct Offer: Equatable, Sendable {
        public var callID: CallID
        public var caller: WalletAddress
        public var callee: WalletAddress
        public var ephemeral: [UInt8]
        public var timestampMs: UInt64
        public var bitrate: UInt32
        public var signature: Signature

        public static func signedPart(callID: CallID, caller: WalletAddress, callee: WalletAddress, ephemeral: [UInt8],
                                      timestampMs: UInt64, bitrate: UInt32) -> [UInt8] {
            var w = ByteWriter(capacity: 128)
            w.write(bytes: Array("meshcall/v1/offer".utf8))
            w.write(callID.raw)
            w.write(bytes: caller.bytes)
            w.write(bytes: callee.bytes)
            w.write(bytes: ephemeral)
            w.write(timestampMs)
            w.write(bitrate)
            return w.bytes
        }

        public var digest: [UInt8] {
            Keccak.hash256(Self.signedPart(callID: callID, caller: caller, callee: callee, ephemeral: ephemeral,
                                           timestampMs: timestampMs, bitrate: bitrate))
        }

        /// Whether the caller's wallet signed this offer.
        public var isAuthentic: Bool { signature.recoverAddress(digest: digest) == caller }
    }

    public struct Answer: Equatable, Sendable {
        public var callID: CallID
        public var ephemeral: [UInt8]
        public var signature: Signature

        /// The callee signs its ephemeral key together with the offer's digest.
        public static func digest(offerDigest: [UInt8], callID: CallID, ephemeral: [UInt8]) -> [UInt8] {
            var w = ByteWriter(capacity: 96)
            w.write(bytes: Array("meshcall/v1/answer".utf8))
            w.write(bytes: offerDigest)
            w.write(callID.raw)
            w.write(bytes: ephemeral)
            return Keccak.hash256(w.bytes)
        }
    }

    enum Tag: UInt8 {
        case offer = 1, ringing, answer, reject, hangup
    }

    public var callID: CallID {
        switch self {
        case .offer(let o): o.callID
        case .answer(let a): a.callID
        case .ringing(let id), .reject(let id, _), .hangup(let id, _): id
        }
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 200)
        switch self {
        case .offer(let o):
            w.write(Tag.offer.rawValue)
            w.write(o.callID.raw)
            w.write(bytes: o.caller.bytes)
            w.write(bytes: o.callee.bytes)
            w.write(bytes: o.ephemeral)
            w.write(o.timestampMs)
            w.write(o.bitrate)
            w.write(bytes: o.signature.bytes)
        case .ringing(let id):
            w.write(Tag.ringing.rawValue)
            w.write(id.raw)
        case .answer(let a):
            w.write(Tag.answer.rawValue)
            w.write(a.callID.raw)
            w.write(bytes: a.ephemeral)
            w.write(bytes: a.signature.bytes)
        case .reject(let id, let reason):
            w.write(Tag.reject.rawValue)
            w.write(id.raw)
            w.write(reason.rawValue)
        case .hangup(let id, let reason):
            w.write(Tag.hangup.rawValue)
            w.write(id.raw)
            w.write(reason.rawValue)
        }
        return w.bytes
    }

    public init?(parsing bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let tag = r.readUInt8().flatMap(Tag.init(rawValue:)), let raw = r.readUInt64() else { return nil }
        let id = CallID(raw: raw)
        switch tag {
        case .offer:
            guard let caller = r.readBytes(20).flatMap(WalletAddress.init(bytes:)),
                  let callee = r.readBytes(20).flatMap(WalletAddress.init(bytes:)),
                  let eph = r.readBytes(32), let ts = r.readUInt64(), let bitrate = r.readUInt32(),
                  let sig = r.readBytes(65).flatMap(Signature.init(bytes:)) else { return nil }
            self = .offer(Offer(callID: id, caller: caller, callee: callee, ephemeral: eph, timestampMs: ts,
                                bitrate: bitrate, signature: sig))
        case .ringing:
            self = .ringing(id)
        case .answer:
            guard let eph = r.readBytes(32), let sig = r.readBytes(65).flatMap(Signature.init(bytes:)) else { return nil }
            self = .answer(Answer(callID: id, ephemeral: eph, signature: sig))
        case .reject, .hangup:
            guard let reason = r.readUInt8().flatMap(CallEndReason.init(rawValue:)) else { return nil }
            self = tag == .reject ? .reject(id, reason) : .hangup(id, reason)
        }
        guard r.isAtEnd else { return nil }
    }
}
