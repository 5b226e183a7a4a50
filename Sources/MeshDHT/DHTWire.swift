import MeshIdentity
import MeshWire

/// A DHT message, as the protocol core sees it (the envelope layer adds signing and timestamps).
public enum DHTMessage: Sendable, Equatable {
    case ping
    /// The endpoint the PING came from, as the answering node saw it.
    case pong(observed: DHTEndpoint)
    case findNode(target: NodeID)
    /// Answer to FIND_NODE, and to FIND_VALUE when the node holds no record for the key.
    case nodes([Contact])
    case findValue(key: NodeID)
    case value(PresenceRecord)
    case store(PresenceRecord)
    case stored(StoreResult)
    /// One-way: the home node of the record under `key` with `sequence` withdraws it.
    case withdraw(key: NodeID, sequence: UInt64)

    var type: DHTMessageType {
        switch self {
        case .ping: .ping
        case .pong: .pong
        case .findNode: .findNode
        case .nodes: .nodes
        case .findValue: .findValue
        case .value: .value
        case .store: .store
        case .stored: .stored
        case .withdraw: .withdraw
        }
    }

    var isResponse: Bool {
        switch self {
        case .pong, .nodes, .value, .stored: true
        case .ping, .findNode, .findValue, .store, .withdraw: false
        }
    }
}

/// The answer to a STORE.
public enum StoreResult: Sendable, Equatable {
    case stored
    /// The node holds this record or one with a higher sequence.
    case stale
    case refused(RecordRefusal)
    case full
}

/// A message and its transaction id: random in a request, echoed by the response.
public struct DHTPacket: Sendable, Equatable {
    public var txid: UInt64
    public var message: DHTMessage
    /// Zero bytes after the body of a PING, FIND_NODE or FIND_VALUE: a node answers a sender whose address it
    /// has not verified with no more bytes than the request carried, so requests are padded to the size of the
    /// answer they need (docs/dht.md, "Amplification").
    public var padding: Int

    public init(txid: UInt64, message: DHTMessage, padding: Int = 0) {
        self.txid = txid
        self.message = message
        self.padding = padding
    }
}

enum DHTMessageType: UInt8 {
    case ping = 1, pong, findNode, nodes, findValue, value, store, stored, withdraw
}

/// The signed datagram (docs/dht.md): marker 0xE4, version, type, txid (u64), timestamp (u64 ms), body,
/// signature (65) over Keccak-256("meshdht/v1/message" ‖ every byte before it). The sender's node id is
/// Keccak-256 of the public key the signature recovers.
public enum DHTWire {
    /// First byte of every DHT datagram (links use 0xE1–0xE3, STUN 0–3).
    public static let marker: UInt8 = 0xE4
    public static let version: UInt8 = 1
    /// marker, version, type, txid, timestamp.
    public static let headerBytes = 1 + 1 + 1 + 8 + 8
    public static let overheadBytes = headerBytes + Signature.byteCount
    /// Contacts in one NODES message: 20 IPv6 contacts make a 1,105-byte datagram.
    public static let maxContacts = 20
    static let label = Array("meshdht/v1/message".utf8)
    /// FIND_NODE and FIND_VALUE are padded to this size: room for the largest answer (NODES with 20 IPv6
    /// contacts, 1,105 bytes) plus a PING, and the largest UDP payload IPv6 never fragments (1,280 − 40 − 8).
    public static let paddedRequestBytes = 1_232
    /// A PING is padded to the largest PONG (an IPv6 observed endpoint).
    public static let paddedPingBytes = overheadBytes + 19

    /// The datagram size of a packet once sealed.
    public static func size(of packet: DHTPacket) -> Int {
        overheadBytes + bodyBytes(packet.message) + packet.padding
    }

    static func bodyBytes(_ message: DHTMessage) -> Int {
        switch message {
        case .ping: 0
        case .pong(let observed): observed.wireBytes
        case .findNode, .findValue: NodeID.byteCount
        case .nodes(let contacts): 1 + contacts.prefix(maxContacts).reduce(0) { $0 + NodeID.byteCount + $1.endpoint.wireBytes }
        case .value(let record), .store(let record): 2 + record.serialize().count
        case .stored: 2
        case .withdraw: NodeID.byteCount + 8
        }
    }

    /// The padding that brings a request to the size its answer may need.
    static func padding(for message: DHTMessage) -> Int {
        switch message {
        case .ping: paddedPingBytes - overheadBytes
        case .findNode, .findValue: paddedRequestBytes - overheadBytes - NodeID.byteCount
        default: 0
        }
    }

    /// Signs and serializes a packet.
    public static func seal(_ packet: DHTPacket, timestampMs: Int64, identity: PrivateKey) -> [UInt8] {
        var w = ByteWriter(capacity: 256)
        w.write(marker)
        w.write(version)
        w.write(packet.message.type.rawValue)
        w.write(packet.txid)
        w.write(UInt64(bitPattern: timestampMs))
        writeBody(packet.message, to: &w)
        w.write(bytes: repeatElement(UInt8(0), count: packet.padding))
        let signature = identity.sign(digest: Keccak.hash256(label + w.bytes))
        w.write(bytes: signature.bytes)
        return w.bytes
    }

    /// A datagram that parsed: the packet, its signed timestamp and what the signature covers.
    struct Opened {
        var packet: DHTPacket
        var timestampMs: Int64
        var signedPart: ArraySlice<UInt8>
        var signature: Signature

        /// The first 8 bytes of the signature's r: with the txid, what the replay cache remembers of a request.
        var replayTag: UInt64 { signature.bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) } }

        /// The sender's id, nil when the signature recovers no key.
        func sender() -> NodeID? {
            signature.recoverPublicKey(digest: Keccak.hash256(DHTWire.label + signedPart)).map(NodeID.init(publicKey:))
        }
    }

    /// Parses a datagram without checking the signature; nil when it is malformed.
    static func open(_ datagram: [UInt8]) -> Opened? {
        guard datagram.count >= overheadBytes else { return nil }
        let signedCount = datagram.count - Signature.byteCount
        var r = ByteReader(Array(datagram[..<signedCount]))
        guard r.readUInt8() == marker, r.readUInt8() == version,
              let type = r.readUInt8().flatMap(DHTMessageType.init(rawValue:)),
              let txid = r.readUInt64(), let timestamp = r.readUInt64(),
              let message = readBody(type, from: &r),
              r.isAtEnd || (padding(for: message) > 0 && r.readRest().allSatisfy { $0 == 0 }),
              let signature = Signature(bytes: Array(datagram[signedCount...]))
        else { return nil }
        let padding = datagram.count - overheadBytes - bodyBytes(message)
        return Opened(packet: DHTPacket(txid: txid, message: message, padding: padding), timestampMs: Int64(bitPattern: timestamp),
                      signedPart: datagram[..<signedCount], signature: signature)
    }

    /// The header of the unsigned answers (clock notice, cookie reply): marker, version, type, the request's txid.
    static let unsignedHeaderBytes = 1 + 1 + 1 + 8

    static func unsignedHeader(type: UInt8, txid: UInt64, bodyBytes: Int) -> ByteWriter {
        var w = ByteWriter(capacity: unsignedHeaderBytes + bodyBytes)
        w.write(marker)
        w.write(version)
        w.write(type)
        w.write(txid)
        return w
    }

    /// The txid and a reader at the body of an unsigned answer of `type` that is exactly `byteCount` long.
    static func readUnsignedHeader(_ datagram: [UInt8], type: UInt8, byteCount: Int) -> (UInt64, ByteReader)? {
        guard datagram.count == byteCount else { return nil }
        var r = ByteReader(datagram)
        guard r.readUInt8() == marker, r.readUInt8() == version, r.readUInt8() == type, let txid = r.readUInt64() else { return nil }
        return (txid, r)
    }

    /// The answer to a request refused for its timestamp (docs/dht.md, "Clock skew"): marker, version, type 10,
    /// the request's txid, the refusing node's clock (u64 ms); 19 bytes, unsigned. Smaller than any request (84
    /// bytes at least), so it amplifies nothing; a node acts on one only when it echoes the txid of a request
    /// of its own in flight to the endpoint it came from, and then only logs and counts it.
    public struct ClockNotice: Sendable, Equatable {
        static let type: UInt8 = 10
        public static let byteCount = unsignedHeaderBytes + 8
        public var txid: UInt64
        public var clockMs: Int64

        public init(txid: UInt64, clockMs: Int64) {
            self.txid = txid
            self.clockMs = clockMs
        }

        public init?(parsing datagram: [UInt8]) {
            guard let (txid, reader) = readUnsignedHeader(datagram, type: Self.type, byteCount: Self.byteCount) else { return nil }
            var r = reader
            guard let clock = r.readUInt64() else { return nil }
            self.init(txid: txid, clockMs: Int64(bitPattern: clock))
        }

        public func serialized() -> [UInt8] {
            var w = unsignedHeader(type: Self.type, txid: txid, bodyBytes: 8)
            w.write(UInt64(bitPattern: clockMs))
            return w.bytes
        }
    }

    /// The answer to a request that must first prove its source address (docs/dht.md, "Cookies"): marker,
    /// version, type 11, the request's txid, a 16-byte cookie (a MAC of the requester's endpoint); 27 bytes,
    /// unsigned, smaller than any request. The requester sends the request again inside a `Cookied` wrapper.
    public struct CookieReply: Sendable, Equatable {
        static let type: UInt8 = 11
        public static let byteCount = unsignedHeaderBytes + Cookie.byteCount
        public var txid: UInt64
        public var cookie: Cookie

        public init(txid: UInt64, cookie: Cookie) {
            self.txid = txid
            self.cookie = cookie
        }

        public init?(parsing datagram: [UInt8]) {
            guard let (txid, reader) = readUnsignedHeader(datagram, type: Self.type, byteCount: Self.byteCount) else { return nil }
            var r = reader
            guard let cookie = r.readBytes(Cookie.byteCount).map(Cookie.init(bytes:)) else { return nil }
            self.init(txid: txid, cookie: cookie)
        }

        public func serialized() -> [UInt8] {
            var w = unsignedHeader(type: Self.type, txid: txid, bodyBytes: Cookie.byteCount)
            w.write(bytes: cookie.bytes)
            return w.bytes
        }
    }

    /// A request carrying the cookie its receiver handed out: marker, version, type 12, the cookie, then the
    /// whole signed request datagram unchanged.
    public enum Cookied {
        static let type: UInt8 = 12
        static let headerBytes = 1 + 1 + 1 + Cookie.byteCount

        public static func wrap(_ datagram: [UInt8], cookie: Cookie) -> [UInt8] {
            [marker, version, type] + cookie.bytes + datagram
        }

        /// The cookie and the request inside, nil when `datagram` is not a cookied request.
        public static func unwrap(_ datagram: [UInt8]) -> (Cookie, [UInt8])? {
            guard datagram.count > headerBytes, datagram[0] == marker, datagram[1] == version, datagram[2] == type else { return nil }
            return (Cookie(bytes: Array(datagram[3..<headerBytes])), Array(datagram[headerBytes...]))
        }
    }

    static func writeBody(_ message: DHTMessage, to w: inout ByteWriter) {
        switch message {
        case .ping: break
        case .pong(let observed): observed.write(to: &w)
        case .findNode(let id), .findValue(let id): w.write(bytes: id.bytes)
        case .nodes(let contacts):
            let sent = contacts.prefix(maxContacts)
            w.write(UInt8(sent.count))
            for contact in sent { contact.write(to: &w) }
        case .value(let record), .store(let record): w.writeLengthPrefixed(record.serialize())
        case .stored(let result):
            switch result {
            case .stored: w.write(UInt8(0)); w.write(UInt8(0))
            case .stale: w.write(UInt8(1)); w.write(UInt8(0))
            case .full: w.write(UInt8(2)); w.write(UInt8(0))
            case .refused(let reason): w.write(UInt8(3)); w.write(reason.wireCode)
            }
        case .withdraw(let key, let sequence):
            w.write(bytes: key.bytes)
            w.write(sequence)
        }
    }

    static func readBody(_ type: DHTMessageType, from r: inout ByteReader) -> DHTMessage? {
        switch type {
        case .ping: return .ping
        case .pong: return DHTEndpoint.read(from: &r).map { .pong(observed: $0) }
        case .findNode: return r.readBytes(NodeID.byteCount).flatMap(NodeID.init(bytes:)).map { .findNode(target: $0) }
        case .findValue: return r.readBytes(NodeID.byteCount).flatMap(NodeID.init(bytes:)).map { .findValue(key: $0) }
        case .nodes:
            guard let count = r.readUInt8(), count <= maxContacts else { return nil }
            var contacts: [Contact] = []
            for _ in 0..<count {
                guard let contact = Contact.read(from: &r) else { return nil }
                contacts.append(contact)
            }
            return .nodes(contacts)
        case .value, .store:
            guard let body = r.readLengthPrefixed(max: 1200), let record = PresenceRecord(parsing: body) else { return nil }
            return type == .value ? .value(record) : .store(record)
        case .stored:
            guard let status = r.readUInt8(), let code = r.readUInt8() else { return nil }
            switch (status, code) {
            case (0, 0): return .stored(.stored)
            case (1, 0): return .stored(.stale)
            case (2, 0): return .stored(.full)
            case (3, _): return RecordRefusal(wireCode: code).map { .stored(.refused($0)) }
            default: return nil
            }
        case .withdraw:
            guard let key = r.readBytes(NodeID.byteCount).flatMap(NodeID.init(bytes:)), let sequence = r.readUInt64()
            else { return nil }
            return .withdraw(key: key, sequence: sequence)
        }
    }
}
