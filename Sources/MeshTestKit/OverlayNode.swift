import MeshCall
import MeshIdentity
import MeshLink
import MeshRouting

/// A whole node as the daemon stacks its cores: a `LinkManager` (endpoint = node index) with a `GossipEngine`, a
/// `RelayEngine` and a `CallEngine` on top. Gossip and chain messages are link payloads (gossip as an
/// `AppMessage`, chain messages by their own tags); a link coming up or going down is a gossip neighbour coming up
/// (at a fixed cost) or going down, and a link down for the relay engine, which routes by the links up and gossip's
/// node routes and measures hops by the links' figures. A call is placed as `placeCall` does: the chain to the
/// callee's home node first, then the offer through it; signalling and media travel the chain as `CallInner`, and
/// an incoming call is answered at once (the daemon's auto-answer). Each core is ticked only when it is due, as the
/// daemon's core timer does.
public struct OverlayNode: SimNode, Sendable {
    /// What the node reports.
    public enum Event: Sendable, Equatable {
        case linkUp(WalletAddress)
        case linkDown(WalletAddress, reason: String)
        case refused(String)
        /// What the relay engine reports: call bytes delivered, chains up, failed or switched, judgements.
        case relay(RelayAction)
        /// What the call engine reports: incoming, ringing, established, ended.
        case call(CallAction)
    }

    /// A call waiting for its chain before its offer goes out.
    struct Placing: Sendable {
        let id: CallID
        let caller: WalletAddress
        let callee: WalletAddress
        let home: WalletAddress
        let bitrate: Int
    }

    public enum Action: Sendable {
        case send([UInt8], to: Int)
        case event(Event)
    }

    public var links: LinkManager<Int>
    public var gossip: GossipEngine
    public var relay: RelayEngine
    public var calls: CallEngine
    /// The gossip cost of every link.
    public var linkCost: UInt16
    /// Calls placed here whose chain is not up yet, by call.
    private var placing: [UInt64: Placing] = [:]

    public init(links: LinkManager<Int>, gossip: GossipEngine, relay: RelayEngine, calls: CallEngine, linkCost: UInt16 = 10) {
        self.links = links
        self.gossip = gossip
        self.relay = relay
        self.calls = calls
        self.linkCost = linkCost
    }

    /// A node with identity `nodeKey` hosting `hosted`, the randomness of its link, relay and call engines drawn
    /// from `seed`.
    /// With `announcesNode` (as the daemon does) gossip spreads the node's own route too, which chains are routed
    /// by; without, gossip carries the hosted wallets only.
    public init(nodeKey: PrivateKey, hosted: [PrivateKey], seed: UInt64, announcesNode: Bool = true,
                gossip config: GossipConfig = GossipConfig(), linkCost: UInt16 = 10, now: Int64) {
        var seeds = SplitMix64(seed: seed)
        self.init(links: LinkManager(identity: nodeKey, random: .seeded(seeds.next())),
                  gossip: GossipEngine(local: nodeKey.address, hosted: hosted, nodeKey: announcesNode ? nodeKey : nil, sequence: 1,
                                       config: config, nowMs: now),
                  relay: RelayEngine(local: nodeKey.address, seed: seeds.next()),
                  calls: CallEngine(wallets: hosted, random: .seeded(seeds.next())),
                  linkCost: linkCost)
    }

    public var address: WalletAddress { links.localAddress }

    /// The forwarding layer's view of the node, as the daemon gives it: links up, gossip's node routes, link figures.
    public var routes: Routes { Routes(links: links, gossip: gossip) }

    /// Dials node `index`.
    public mutating func connect(to index: Int, now: Int64) -> [Action] {
        var out: [Action] = []
        run(links.connect(to: index, pinned: nil, now: now), now: now, into: &out)
        return out
    }

    /// Opens a chain for `call` to the node `target`, set up in the name of `wallet`.
    public mutating func open(call: UInt64, wallet: PrivateKey, target: WalletAddress, now: Int64) -> [Action] {
        var out: [Action] = []
        let actions = relay.open(call: call, wallet: wallet, target: target, hints: [], routes: routes, now: now)
        run(actions, now: now, into: &out)
        return out
    }

    /// Sends end-to-end bytes of `call` on its active chain.
    public mutating func send(call: UInt64, _ bytes: [UInt8], now: Int64) -> [Action] {
        var out: [Action] = []
        run(relay.send(call: call, bytes), now: now, into: &out)
        return out
    }

    /// Calls `callee`, a wallet hosted at the node `home`, from the hosted wallet `caller`.
    public mutating func placeCall(_ id: CallID, from caller: PrivateKey, to callee: WalletAddress, home: WalletAddress,
                                   bitrate: Int = 24_000, now: Int64) -> [Action] {
        placing[id.raw] = Placing(id: id, caller: caller.address, callee: callee, home: home, bitrate: bitrate)
        return open(call: id.raw, wallet: caller, target: home, now: now)
    }

    /// Sends one media packet of call `id` on its chain.
    public mutating func sendMedia(_ id: CallID, _ packet: [UInt8], now: Int64) -> [Action] {
        send(call: id.raw, CallInner.media(packet).serialize(), now: now)
    }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [Action] {
        var out: [Action] = []
        run(links.receive(datagram, from: sender, now: now), now: now, into: &out)
        return Self.inPathOrder(out)
    }

    public mutating func tick(now: Int64) -> [Action] {
        var out: [Action] = []
        if let due = links.nextDeadline, due <= now { run(links.tick(now: now), now: now, into: &out) }
        if gossip.nextDeadline <= now { run(gossip.tick(nowMs: now), now: now, into: &out) }
        if let due = relay.nextDeadline, due <= now {
            let actions = relay.tick(routes: routes, now: now)
            run(actions, now: now, into: &out)
        }
        if let due = calls.nextDeadline, due <= now { run(calls.tick(now: now), now: now, into: &out) }
        return Self.inPathOrder(out)
    }

    public var nextDeadline: Int64? {
        min(min(links.nextDeadline ?? .max, gossip.nextDeadline), min(relay.nextDeadline ?? .max, calls.nextDeadline ?? .max))
    }

    /// The actions with the datagrams by destination (each destination's in the order sent), after the events. The
    /// link manager emits a tick's datagrams in the order of its dictionaries, which differs between runs (hash
    /// seeds); the network draws each datagram's fate in the order it gets them, so this keeps runs repeatable.
    private static func inPathOrder(_ actions: [Action]) -> [Action] {
        func destination(_ action: Action) -> Int {
            if case .send(_, let to) = action { return to }
            return -1
        }
        guard actions.count > 1 else { return actions }
        return actions.enumerated().sorted { (destination($0.element), $0.offset) < (destination($1.element), $1.offset) }.map(\.element)
    }

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
                deliver(payload, from: peer, now: now, into: &out)
            case .up(let peer, _):
                out.append(.event(.linkUp(peer)))
                run(gossip.neighbourUp(peer, cost: linkCost, nowMs: now), now: now, into: &out)
            case .down(let peer, let reason):
                out.append(.event(.linkDown(peer, reason: reason)))
                run(gossip.neighbourDown(peer, nowMs: now), now: now, into: &out)
                let relayed = relay.linkDown(peer, routes: routes, now: now)
                run(relayed, now: now, into: &out)
            case .refused(_, let reason):
                out.append(.event(.refused(reason)))
            }
        }
    }

    private mutating func deliver(_ payload: [UInt8], from peer: WalletAddress, now: Int64, into out: inout [Action]) {
        if ChainMessage.isData(payload) {
            var message = payload
            switch relay.forward(&message, from: peer, now: now) {
            case .pass(let next): run(links.send(message, to: next, now: now), now: now, into: &out)
            case .actions(let actions): run(actions, now: now, into: &out)
            }
        } else if ChainMessage.claims(payload) {
            let actions = relay.receive(payload, from: peer, routes: routes, now: now)
            run(actions, now: now, into: &out)
        } else if case .gossip(let message)? = AppMessage(parsing: payload) {
            run(gossip.receive(message, from: peer, nowMs: now), now: now, into: &out)
        }
    }

    private mutating func run(_ actions: [GossipAction], now: Int64, into out: inout [Action]) {
        for case .send(let message, let peer) in actions {
            run(links.send(AppMessage.gossip(message).serialize(), to: peer, now: now), now: now, into: &out)
        }
    }

    private mutating func run(_ actions: [RelayAction], now: Int64, into out: inout [Action]) {
        for action in actions {
            switch action {
            case .send(let message, let peer):
                run(links.send(message, to: peer, now: now), now: now, into: &out)
                continue
            case .deliver(let call, let bytes):
                deliver(call: call, bytes, now: now, into: &out)
            case .chainUp(let call):
                guard let call = placing.removeValue(forKey: call),
                      let (_, offer) = calls.place(id: call.id, from: call.caller, to: call.callee, via: call.home, bitrate: call.bitrate,
                                                   now: now) else { break }
                run(offer, now: now, into: &out)
            case .chainFailed(let call, _):
                if placing.removeValue(forKey: call) == nil { run(calls.chainLost(CallID(raw: call), now: now), now: now, into: &out) }
            case .chainSwitched, .judged:
                break
            }
            out.append(.event(.relay(action)))
        }
    }

    /// End-to-end bytes that reached this end of a chain: call signalling (for the chain's own call) and media.
    private mutating func deliver(call raw: UInt64, _ bytes: [UInt8], now: Int64, into out: inout [Action]) {
        let id = CallID(raw: raw)
        switch CallInner(parsing: bytes) {
        case .signal(let body)?:
            guard CallMessage(parsing: body)?.callID == id, let farEnd = relay.farEnd(call: raw) else { return }
            run(calls.receive(body, from: farEnd, now: now), now: now, into: &out)
        case .media?:
            calls.mediaArrived(id, now: now)
        default:
            break
        }
    }

    private mutating func run(_ actions: [CallAction], now: Int64, into out: inout [Action]) {
        for action in actions {
            switch action {
            case .send(let body, _):
                guard let id = CallMessage(parsing: body)?.callID else { continue }
                run(relay.send(call: id.raw, CallInner.signal(body).serialize()), now: now, into: &out)
                continue
            case .incoming(let id, _, _):
                out.append(.event(.call(action)))
                run(calls.answer(id, now: now), now: now, into: &out)
                continue
            case .established(let id, let keys):
                let caller = calls.calls[id]?.role == .caller
                relay.authenticate(call: id.raw, key: ProbeKey(callerToCallee: caller ? keys.send : keys.receive,
                                                               calleeToCaller: caller ? keys.receive : keys.send))
            case .ringing, .ended:
                break
            }
            out.append(.event(.call(action)))
        }
    }

    /// The daemon's `LinkRoutes` over copies of the node's link manager and gossip engine (made for one call of
    /// the relay engine, and gone before either is changed, so nothing is copied).
    public struct Routes: RelayRoutes, Sendable {
        let links: LinkManager<Int>
        let gossip: GossipEngine

        public func isUp(_ node: WalletAddress) -> Bool { links.isUp(node) }

        public func nextHops(toward target: WalletAddress, within hops: Int) -> [WalletAddress] {
            var next: [WalletAddress] = links.isUp(target) ? [target] : []
            for route in gossip.neighbourRoutes(to: target) where route.links <= hops && route.via != target && links.isUp(route.via) {
                next.append(route.via)
            }
            return next
        }

        public func figures(_ neighbour: WalletAddress) -> HopFigures {
            let quality = links.quality(neighbour)
            return HopFigures(node: links.localAddress, rttMs: quality?.rttMs, lossPercent: quality?.lossPercent ?? 0)
        }
    }
}
