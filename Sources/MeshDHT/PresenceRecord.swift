import MeshIdentity
import MeshWire

/// Where a wallet can be reached: its home node, that node's endpoints and the relays it keeps links with.
/// Signed by the wallet key and stored under `NodeID.key(for: wallet)` on the k closest nodes; a higher
/// sequence replaces a lower one. A record with no endpoints and no relays says the wallet is offline.
public struct PresenceRecord: Sendable, Equatable, Codable {
    public var wallet: WalletAddress
    public var homeNode: NodeID
    public var endpoints: [DHTEndpoint]
    public var relays: [Contact]
    public var sequence: UInt64
    public var expiresAtMs: Int64
    public var signature: Signature

    static let version: UInt8 = 1
    static let signatureLabel = Array("meshdht/v1/presence".utf8)

    public init(wallet: WalletAddress, homeNode: NodeID, endpoints: [DHTEndpoint], relays: [Contact],
                sequence: UInt64, expiresAtMs: Int64, signature: Signature) {
        self.wallet = wallet
        self.homeNode = homeNode
        self.endpoints = endpoints
        self.relays = relays
        self.sequence = sequence
        self.expiresAtMs = expiresAtMs
        self.signature = signature
    }

    /// Signs a record with the wallet key.
    public static func make(wallet: PrivateKey, homeNode: NodeID, endpoints: [DHTEndpoint], relays: [Contact],
                            sequence: UInt64, expiresAtMs: Int64) -> PresenceRecord {
        let body = signedPart(wallet: wallet.address, homeNode: homeNode, endpoints: endpoints, relays: relays,
                              sequence: sequence, expiresAtMs: expiresAtMs)
        let signature = wallet.sign(label: signatureLabel, body: body)
        return PresenceRecord(wallet: wallet.address, homeNode: homeNode, endpoints: endpoints, relays: relays,
                              sequence: sequence, expiresAtMs: expiresAtMs, signature: signature)
    }

    public var key: NodeID { NodeID.key(for: wallet) }

    /// True when the record announces that the wallet went offline (no way to reach it).
    public var isWithdrawal: Bool { endpoints.isEmpty && relays.isEmpty }

    /// version, wallet (20), home node (32), endpoint count (u8) and endpoints, relay count (u8) and relays,
    /// sequence (u64), expiry (i64 ms), then the 65-byte signature over Keccak-256(label ‖ all before it).
    static func signedPart(wallet: WalletAddress, homeNode: NodeID, endpoints: [DHTEndpoint], relays: [Contact],
                           sequence: UInt64, expiresAtMs: Int64) -> [UInt8] {
        var w = ByteWriter(capacity: 128)
        w.write(version)
        w.write(bytes: wallet.bytes)
        w.write(bytes: homeNode.bytes)
        w.write(UInt8(clamping: endpoints.count))
        for endpoint in endpoints.prefix(255) { endpoint.write(to: &w) }
        w.write(UInt8(clamping: relays.count))
        for relay in relays.prefix(255) { relay.write(to: &w) }
        w.write(sequence)
        w.write(UInt64(bitPattern: expiresAtMs))
        return w.bytes
    }

    var signedPart: [UInt8] {
        Self.signedPart(wallet: wallet, homeNode: homeNode, endpoints: endpoints, relays: relays,
                        sequence: sequence, expiresAtMs: expiresAtMs)
    }

    public func serialize() -> [UInt8] { signedPart + signature.bytes }

    public init?(parsing bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard r.readUInt8() == Self.version,
              let walletBytes = r.readBytes(WalletAddress.byteCount), let wallet = WalletAddress(bytes: walletBytes),
              let homeBytes = r.readBytes(NodeID.byteCount), let homeNode = NodeID(bytes: homeBytes),
              let endpointCount = r.readUInt8()
        else { return nil }
        var endpoints: [DHTEndpoint] = []
        for _ in 0..<endpointCount {
            guard let endpoint = DHTEndpoint.read(from: &r) else { return nil }
            endpoints.append(endpoint)
        }
        guard let relayCount = r.readUInt8() else { return nil }
        var relays: [Contact] = []
        for _ in 0..<relayCount {
            guard let relay = Contact.read(from: &r) else { return nil }
            relays.append(relay)
        }
        guard let sequence = r.readUInt64(), let expiry = r.readUInt64(),
              let signatureBytes = r.readBytes(Signature.byteCount), let signature = Signature(bytes: signatureBytes),
              r.isAtEnd
        else { return nil }
        self.init(wallet: wallet, homeNode: homeNode, endpoints: endpoints, relays: relays, sequence: sequence,
                  expiresAtMs: Int64(bitPattern: expiry), signature: signature)
    }

    /// Nil when the record may be stored and served at `nowMs`; otherwise why not. Cheap checks come first;
    /// the signature must recover the record's own wallet address.
    public func validate(nowMs: Int64, config: DHTConfig) -> RecordRefusal? {
        if endpoints.count > config.maxEndpoints { return .tooManyEndpoints }
        if relays.count > config.maxRelays { return .tooManyRelays }
        let body = signedPart
        if body.count + Signature.byteCount > config.maxRecordBytes { return .oversized }
        if expiresAtMs <= nowMs { return .expired }
        if expiresAtMs - nowMs > config.maxExpiryAheadMs { return .expiryTooFarAhead }
        guard signature.signer(label: Self.signatureLabel, body: body) == wallet else {
            return .badSignature
        }
        return nil
    }

    // MARK: Codable: addresses, ids and the signature as text

    enum CodingKeys: String, CodingKey {
        case wallet, homeNode, endpoints, relays, sequence, expiresAtMs, signature
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        do {
            wallet = try WalletAddress(parsing: try c.decode(String.self, forKey: .wallet))
            signature = try Signature(parsing: try c.decode(String.self, forKey: .signature))
        } catch let error as IdentityError {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: error.message))
        }
        homeNode = try c.decode(NodeID.self, forKey: .homeNode)
        endpoints = try c.decode([DHTEndpoint].self, forKey: .endpoints)
        relays = try c.decode([Contact].self, forKey: .relays)
        sequence = try c.decode(UInt64.self, forKey: .sequence)
        expiresAtMs = try c.decode(Int64.self, forKey: .expiresAtMs)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(wallet.checksummed, forKey: .wallet)
        try c.encode(homeNode, forKey: .homeNode)
        try c.encode(endpoints, forKey: .endpoints)
        try c.encode(relays, forKey: .relays)
        try c.encode(sequence, forKey: .sequence)
        try c.encode(expiresAtMs, forKey: .expiresAtMs)
        try c.encode(signature.description, forKey: .signature)
    }
}
