import CNice

/// What an agent reports, on the ICE thread (`ICELoop`): the owner hops each event onto its own event loop.
public enum ICEEvent: Sendable, Equatable {
    /// A local candidate in SDP form (`a=candidate:…`), to trickle to the peer.
    case localCandidate(String)
    /// Every local candidate has been reported.
    case gatheringDone
    case stateChanged(ICEState)
    /// The pair media goes over now; may come several times while checks finish (a better pair, nomination).
    case selectedPair(local: CandidateInfo, remote: CandidateInfo)
    /// A datagram from the peer over the selected pair.
    case received([UInt8])
    /// No pair works (checks over, or consent lost). libnice does not recover by itself: the owner falls back to
    /// the relay chain and may start a new agent.
    case failed
}

/// libnice's component states.
public enum ICEState: String, Sendable, Equatable {
    case disconnected, gathering, connecting, connected, ready, failed

    init(_ raw: UInt32) {
        switch raw {
        case NICE_COMPONENT_STATE_GATHERING.rawValue: self = .gathering
        case NICE_COMPONENT_STATE_CONNECTING.rawValue: self = .connecting
        case NICE_COMPONENT_STATE_CONNECTED.rawValue: self = .connected
        case NICE_COMPONENT_STATE_READY.rawValue: self = .ready
        case NICE_COMPONENT_STATE_FAILED.rawValue: self = .failed
        default: self = .disconnected
        }
    }
}

/// One end of a candidate pair.
public struct CandidateInfo: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        case host, srflx, prflx, relay
    }

    public let kind: Kind
    public let address: String
    public let port: UInt16

    public init(kind: Kind, address: String, port: UInt16) {
        self.kind = kind
        self.address = address
        self.port = port
    }

    public var description: String { "\(kind.rawValue) \(address):\(port)" }

    init(_ candidate: UnsafePointer<NiceCandidate>) {
        switch candidate.pointee.type {
        case NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE: kind = .srflx
        case NICE_CANDIDATE_TYPE_PEER_REFLEXIVE: kind = .prflx
        case NICE_CANDIDATE_TYPE_RELAYED: kind = .relay
        default: kind = .host
        }
        var address = candidate.pointee.addr
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        nice_address_to_string(&address, &text)
        self.address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        port = UInt16(truncatingIfNeeded: nice_address_get_port(&address))
    }
}

/// A STUN server: an IP address (libnice does not resolve names) and a port. Any mesh node's UDP port is one
/// (docs/stun.md).
public struct STUNServer: Sendable, Equatable {
    public var host: String
    public var port: UInt16
    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }
}

/// A TURN server (RFC 8656) over UDP with long-term credentials, e.g. coturn.
public struct TURNServer: Sendable, Equatable {
    public var host: String
    public var port: UInt16
    public var username: String
    public var password: String
    public init(host: String, port: UInt16, username: String, password: String) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
    }
}

/// How an agent is built (docs/ice.md gives the measurements behind each default).
public struct ICESettings: Sendable, Equatable {
    public enum Nomination: String, Sendable, Equatable {
        /// RFC 8445's only mode: the controlling agent nominates a pair that passed its checks. libnice 0.1.21 waits
        /// until every pair of higher priority has failed: behind two cone NATs, the unreachable host pairs first
        /// (~810 ms to the first selected pair in nat-lab, against ~60 ms aggressive; docs/ice.md).
        case regular
        /// RFC 5245's USE-CANDIDATE on every check (deprecated by RFC 8445, understood by libnice at both ends): the
        /// first pair that works is selected at once, and a better one may replace it while checks finish.
        case aggressive
    }

    public var stunServer: STUNServer?
    /// With a TURN server set, `stunServer` is not used: in libnice 0.1.21 both together add ~2 s to gathering,
    /// and the TURN server yields the server-reflexive candidate too.
    public var turn: TURNServer?
    public var nomination = Nomination.aggressive
    /// RFC 7675 consent freshness: a path that stops answering is declared failed (~10 s) instead of staying
    /// "ready" for ever.
    public var consentFreshness = true
    /// libnice's `stun-max-retransmissions` (its default is 7).
    public var stunMaxRetransmissions: UInt32 = 2
    /// libnice's `idle-timeout` in ms (its default is 5,000).
    public var idleTimeoutMs: UInt32 = 1_000
    /// The only local addresses to gather from, when not empty (IP literals). libnice skips loopback unless it is
    /// named here, so tests on one host name 127.0.0.1.
    public var localAddresses: [String] = []

    public init() {}
}
