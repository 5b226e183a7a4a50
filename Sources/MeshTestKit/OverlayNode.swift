import MeshCall
import MeshDHT
import MeshIdentity
import MeshLink
import MeshNodeCore
import MeshRouting

/// Simulated node addresses are node indices; node i's DHT endpoint is `OverlayNode.endpoint(i)`.
extension Int: NodeAddress {
    public init?(dhtEndpoint: DHTEndpoint) {
        guard let index = OverlayNode.index(dhtEndpoint) else { return nil }
        self = index
    }

    public var dhtEndpoint: DHTEndpoint? { OverlayNode.endpoint(self) }
}

/// A whole node: the daemon's own `NodeCore` (links, gossip, forwarding with trunks, calls, the DHT with its
/// presence policy, the wallet finder and the home resolver) on a simulated port, its address its node index.
/// Every input is a turn of the daemon's loop: the core's `endTurn` follows it. Incoming calls are answered at once
/// (the daemon's auto-answer); media that arrives keeps its call alive, as the daemon's media layer says; a record
/// a peer stores is acknowledged at once (the daemon first writes it to disk).
public struct OverlayNode: SimNode, Sendable {
    public enum Action: Sendable {
        case send([UInt8], to: Int)
        case event(NodeEvent<Int>)
    }

    public var core: NodeCore<Int>

    /// Node `index`, with identity `nodeKey` hosting `hosted`, the randomness of its cores drawn from `seed`.
    public init(index: Int, nodeKey: PrivateKey, hosted: [PrivateKey], seed: UInt64, config: NodeCoreConfig = NodeCoreConfig(),
                gossip: GossipConfig = GossipConfig(), now: Int64) {
        var seeds = SplitMix64(seed: seed)
        core = NodeCore(nodeKey: nodeKey, hosted: hosted, config: config, gossipConfig: gossip, random: .seeded(seeds.next()),
                        dhtSeed: seeds.next(), sequence: 1, now: now)
        core.bound = index
    }

    /// The DHT endpoint of node `index` (up to 2²⁴ nodes): 10.x.y.z:4460.
    public static func endpoint(_ index: Int) -> DHTEndpoint {
        DHTEndpoint(ip: [10, UInt8(truncatingIfNeeded: index >> 16), UInt8(truncatingIfNeeded: index >> 8), UInt8(truncatingIfNeeded: index)],
                    port: 4460)!
    }

    public static func index(_ endpoint: DHTEndpoint) -> Int? {
        guard let ip = endpoint.ipv4, ip >> 24 == 10, endpoint.port == 4460 else { return nil }
        return Int(ip & 0xFF_FFFF)
    }

    public var address: WalletAddress { core.address }

    /// Runs one command on the core as a turn of the node's loop.
    public mutating func turn(now: Int64, _ command: (inout NodeCore<Int>, NodeTime, inout Collect) -> Void) -> [Action] {
        var out = Collect()
        let time = NodeTime(ms: now)
        command(&core, time, &out)
        core.endTurn(now: time, into: &out)
        for case .event(let event) in out.actions {
            switch event {
            case .callBytes(let id, .media):
                // The daemon's media layer says when a call's media arrived; here every media packet counts.
                core.mediaArrived(id, now: time)
            case .recordStored(_, let acknowledgement?):
                // The daemon acknowledges a STORE once the record is on disk; here it is stored at once.
                out.actions.append(.send(acknowledgement.bytes, to: acknowledgement.to))
            default:
                continue
            }
        }
        return out.inPathOrder
    }

    /// Dials node `index`.
    public mutating func connect(to index: Int, now: Int64) -> [Action] {
        turn(now: now) { $0.connect(to: index, now: $1, into: &$2) }
    }

    /// Calls `callee` from the hosted wallet `caller` as the daemon does: its home node resolved and reached, a
    /// chain built to it, the offer sent through it.
    public mutating func place(_ id: CallID, from caller: PrivateKey, to callee: WalletAddress, bitrate: Int = 24_000,
                               now: Int64) -> [Action] {
        turn(now: now) { $0.place(id, from: caller, to: callee, bitrate: bitrate, now: $1, into: &$2) }
    }

    /// Joins the DHT through the nodes `bootstrap` and publishes the hosted wallets' presence records.
    public mutating func join(bootstrap: [Int], now: Int64) -> [Action] {
        turn(now: now) { $0.join(bootstrap: bootstrap.map(Self.endpoint), advertise: [], now: $1, into: &$2) }
    }

    /// Sends one media packet of call `id` on its chain.
    public mutating func sendMedia(_ id: CallID, _ packet: [UInt8], now: Int64) -> [Action] {
        turn(now: now) { $0.send(call: id, .media(packet), now: $1, into: &$2) }
    }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [Action] {
        turn(now: now) { core, time, out in
            if datagram.first == DHTWire.marker {
                core.receive(datagram, from: sender, now: time, into: &out)
            } else {
                datagram.withUnsafeBytes { core.receive(link: $0, from: sender, now: time, into: &out) }
            }
        }
    }

    public mutating func tick(now: Int64) -> [Action] {
        turn(now: now) { core, time, out in
            if let due = core.trunks.nextDeadline, due <= time.us { core.expireTrunks(now: time, into: &out) }
            core.tick(now: time, into: &out)
        }
    }

    public var nextDeadline: Int64? {
        // A trunk's hold ends within the millisecond its µs deadline falls in.
        let trunks = core.trunks.nextDeadline.map { ($0 + 999) / 1_000 } ?? .max
        let next = min(core.nextDeadline ?? .max, trunks)
        return next == .max ? nil : next
    }

    public func route(_ action: Action) -> SimRoute<[UInt8]> {
        switch action {
        case .send(let bytes, let to): .send(bytes, to: to)
        case .event: .event
        }
    }

    /// What one turn produced, in order.
    public struct Collect: NodeSink {
        var actions: [Action] = []

        public mutating func append(length: Int, to address: Int, write: (UnsafeMutableRawBufferPointer) -> Void) {
            let bytes = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
                write(UnsafeMutableRawBufferPointer(buffer))
                count = length
            }
            actions.append(.send(bytes, to: address))
        }

        public mutating func event(_ event: NodeEvent<Int>) { actions.append(.event(event)) }

        /// The actions with the datagrams by destination (each destination's in the order sent), after the events.
        /// The link manager emits a tick's datagrams in the order of its dictionaries, which differs between runs
        /// (hash seeds); the network draws each datagram's fate in the order it gets them, so this keeps runs
        /// repeatable.
        var inPathOrder: [Action] {
            func destination(_ action: Action) -> Int {
                if case .send(_, let to) = action { return to }
                return -1
            }
            guard actions.count > 1 else { return actions }
            return actions.enumerated().sorted { (destination($0.element), $0.offset) < (destination($1.element), $1.offset) }.map(\.element)
        }
    }
}
