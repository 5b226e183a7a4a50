import MeshIdentity
import MeshLink
import MeshRouting

/// A whole node's overlay as the daemon stacks it: a `LinkManager` (endpoint = node index) with a `GossipEngine`
/// on top. Gossip messages are link payloads behind the daemon's gossip tag; a link coming up or going down is a
/// gossip neighbour coming up (at a fixed cost) or going down. Each core is ticked only when it is due, as the
/// daemon's core timer does.
public struct OverlayNode: SimNode, Sendable {
    /// What the node reports.
    public enum Event: Sendable, Equatable {
        case linkUp(WalletAddress)
        case linkDown(WalletAddress, reason: String)
        case refused(String)
    }

    public enum Action: Sendable {
        case send([UInt8], to: Int)
        case event(Event)
    }

    /// The first byte of a link payload that carries a gossip message (the daemon's `AppMessage.Tag.gossip`).
    public static let gossipTag: UInt8 = 0x03

    public var links: LinkManager<Int>
    public var gossip: GossipEngine
    /// The gossip cost of every link.
    public var linkCost: UInt16

    public init(links: LinkManager<Int>, gossip: GossipEngine, linkCost: UInt16 = 10) {
        self.links = links
        self.gossip = gossip
        self.linkCost = linkCost
    }

    /// A node with identity `nodeKey` hosting `hosted`, its handshakes drawing on the first bytes of `secret`.
    public init(nodeKey: PrivateKey, hosted: [PrivateKey], secret: [UInt8], gossip config: GossipConfig = GossipConfig(),
                linkCost: UInt16 = 10, now: Int64) {
        self.init(links: LinkManager(identity: nodeKey, random: LinkRandom { Array(secret.prefix($0)) }),
                  gossip: GossipEngine(local: nodeKey.address, hosted: hosted, sequence: 1, config: config, nowMs: now),
                  linkCost: linkCost)
    }

    public var address: WalletAddress { links.localAddress }

    /// Dials node `index`.
    public mutating func connect(to index: Int, now: Int64) -> [Action] {
        var out: [Action] = []
        run(links.connect(to: index, pinned: nil, now: now), now: now, into: &out)
        return out
    }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [Action] {
        var out: [Action] = []
        run(links.receive(datagram, from: sender, now: now), now: now, into: &out)
        return out
    }

    public mutating func tick(now: Int64) -> [Action] {
        var out: [Action] = []
        if let due = links.nextDeadline, due <= now { run(links.tick(now: now), now: now, into: &out) }
        if gossip.nextDeadline <= now { run(gossip.tick(nowMs: now), now: now, into: &out) }
        return out
    }

    public var nextDeadline: Int64? { min(links.nextDeadline ?? .max, gossip.nextDeadline) }

    public func route(_ action: Action) -> SimRoute<[UInt8]> {
        switch action {
        case .send(let bytes, let to): .send(bytes, to: to)
        case .event: .event
        }
    }

    private mutating func run(_ actions: [LinkAction<Int>], now: Int64, into out: inout [Action]) {
        for action in actions {
            switch action {
            case .send(let bytes, let to):
                out.append(.send(bytes, to: to))
            case .deliver(let payload, let peer):
                guard payload.first == Self.gossipTag else { continue }
                run(gossip.receive(Array(payload.dropFirst()), from: peer, nowMs: now), now: now, into: &out)
            case .up(let peer, _):
                out.append(.event(.linkUp(peer)))
                run(gossip.neighbourUp(peer, cost: linkCost, nowMs: now), now: now, into: &out)
            case .down(let peer, let reason):
                out.append(.event(.linkDown(peer, reason: reason)))
                run(gossip.neighbourDown(peer, nowMs: now), now: now, into: &out)
            case .refused(_, let reason):
                out.append(.event(.refused(reason)))
            }
        }
    }

    private mutating func run(_ actions: [GossipAction], now: Int64, into out: inout [Action]) {
        for case .send(let message, let peer) in actions {
            run(links.send([Self.gossipTag] + message, to: peer, now: now), now: now, into: &out)
        }
    }
}
