import MeshCall
import MeshDHT
import MeshIdentity
import MeshLink
import MeshRouting

/// A whole node as the daemon stacks its cores: a `LinkManager` (endpoint = node index) with a `GossipEngine`, a
/// `RelayEngine` and a `CallEngine` on top, and beside them a `DHTNode` on the same port (DHT datagrams by their
/// marker, at `endpoint(index)`) with the `PresencePolicy`, and the `HomeResolver` with the `WalletFinder`. Gossip and chain messages are link payloads (gossip as an
/// `AppMessage`, chain messages by their own tags); a link coming up or going down is a gossip neighbour coming up
/// (at a fixed cost) or going down, and a link down for the relay engine, which routes by the links up and gossip's
/// node routes and measures hops by the links' figures. A call is placed as `placeCall` does: the chain to the
/// callee's home node first, then the offer through it; signalling and media travel the chain as `CallInner`, and
/// an incoming call is answered at once (the daemon's auto-answer). `call` first resolves the callee's home node
/// as the daemon does (gossip and its confirmation, else the DHT and a query over links racing). Each core is ticked
/// only when it is due, as the daemon's core timer does.
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
        /// `call` found its callee's home node, and how.
        case resolved(wallet: WalletAddress, home: WalletAddress, source: String)
        /// `call` found no home node for its callee.
        case unresolved(String)
    }

    /// A call waiting for its callee's home node (`call`).
    struct Resolving: Sendable {
        let id: CallID
        let caller: PrivateKey
        let callee: WalletAddress
        let bitrate: Int
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
    public var dht: DHTNode
    /// When and what to publish in the DHT; nil until the node joins it (`join`).
    public var presence: PresencePolicy?
    public var finder = WalletFinder()
    public var resolver: HomeResolver<Int>
    /// The node's DHT endpoint.
    public let endpoint: DHTEndpoint
    /// The gossip cost of every link.
    public var linkCost: UInt16
    /// Calls placed here whose chain is not up yet, by call.
    private var placing: [UInt64: Placing] = [:]
    /// Calls waiting for their callee's home node, by resolution; the resolver's DHT lookups under way.
    private var resolving: [HomeResolver<Int>.ID: Resolving] = [:]
    private var lookups: [LookupID: (resolution: HomeResolver<Int>.ID, wallet: WalletAddress)] = [:]

    public init(links: LinkManager<Int>, gossip: GossipEngine, relay: RelayEngine, calls: CallEngine, dht: DHTNode,
                resolver: HomeResolver<Int>, index: Int, linkCost: UInt16 = 10) {
        self.links = links
        self.gossip = gossip
        self.relay = relay
        self.calls = calls
        self.dht = dht
        self.resolver = resolver
        self.linkCost = linkCost
        endpoint = Self.endpoint(index)
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

    /// Node `index`, with identity `nodeKey` hosting `hosted`, the randomness of its cores drawn from `seed`.
    /// With `announcesNode` (as the daemon does) gossip spreads the node's own route too, which chains are routed
    /// by; without, gossip carries the hosted wallets only.
    public init(index: Int, nodeKey: PrivateKey, hosted: [PrivateKey], seed: UInt64, announcesNode: Bool = true,
                gossip config: GossipConfig = GossipConfig(), linkCost: UInt16 = 10, now: Int64) {
        var seeds = SplitMix64(seed: seed)
        self.init(links: LinkManager(identity: nodeKey, random: .seeded(seeds.next())),
                  gossip: GossipEngine(local: nodeKey.address, hosted: hosted, nodeKey: announcesNode ? nodeKey : nil, sequence: 1,
                                       config: config, nowMs: now),
                  relay: RelayEngine(local: nodeKey.address, seed: seeds.next()),
                  calls: CallEngine(wallets: hosted, random: .seeded(seeds.next())),
                  dht: DHTNode(identity: nodeKey, config: DHTConfig(), seed: seeds.next()),
                  resolver: HomeResolver(random: LinkRandom.seeded(seeds.next()).bytes), index: index, linkCost: linkCost)
        hostedKeys = hosted
    }

    /// The wallets hosted here, whose presence records the node publishes.
    private var hostedKeys: [PrivateKey] = []

    public var address: WalletAddress { links.localAddress }

    /// The forwarding layer's view of the node, as the daemon gives it: links up, gossip's node routes, link figures.
    public var routes: LinkRoutes<Int> { LinkRoutes(links: links, gossip: gossip) }

    /// Dials node `index`.
    public mutating func connect(to index: Int, now: Int64) -> [Action] {
        var out: [Action] = []
        run(links.connect(to: index, pinned: nil, now: now), now: now, into: &out)
        return out
    }

    /// Sends end-to-end bytes of `call` on its active chain.
    public mutating func send(call: UInt64, _ bytes: [UInt8], now: Int64) -> [Action] {
        var out: [Action] = []
        run(relay.send(call: call, bytes), now: now, into: &out)
        return out
    }

    /// Calls `callee`, a wallet hosted at the node `home`, from the hosted wallet `caller`; `hints` are the relays
    /// the home node's presence record lists.
    public mutating func placeCall(_ id: CallID, from caller: PrivateKey, to callee: WalletAddress, home: WalletAddress,
                                   hints: [WalletAddress] = [], bitrate: Int = 24_000, now: Int64) -> [Action] {
        placing[id.raw] = Placing(id: id, caller: caller.address, callee: callee, home: home, bitrate: bitrate)
        var out: [Action] = []
        run(relay.open(call: id.raw, wallet: caller, target: home, hints: hints, routes: routes, now: now), now: now, into: &out)
        return out
    }

    /// Calls `callee` from the hosted wallet `caller`, first finding the callee's home node as the daemon does.
    public mutating func call(_ id: CallID, from caller: PrivateKey, to callee: WalletAddress, bitrate: Int = 24_000,
                              now: Int64) -> [Action] {
        let route = gossip.route(to: callee).map { (home: $0.origin, linked: links.isUp($0.origin)) }
        let (resolution, actions) = resolver.resolve(callee, route: route, now: now)
        resolving[resolution] = Resolving(id: id, caller: caller, callee: callee, bitrate: bitrate)
        var out: [Action] = []
        run(actions, now: now, into: &out)
        return Self.inPathOrder(out)
    }

    /// Joins the DHT through the nodes `bootstrap` and publishes the hosted wallets' presence records, then as the
    /// presence policy says (the daemon's `joinOverlay`).
    public mutating func join(bootstrap: [Int], now: Int64) -> [Action] {
        var policy = PresencePolicy(relayOnly: false, advertised: [endpoint], now: now)
        var out: [Action] = []
        run(dht.bootstrap(bootstrap.map(Self.endpoint), nowMs: now), now: now, into: &out)
        let reach = policy.reach(bound: endpoint, neighbours: neighbourContacts)
        policy.didPublish(reach, contacts: dht.contactCount)
        presence = policy
        publish(reach, now: now, into: &out)
        return Self.inPathOrder(out)
    }

    /// Sends one media packet of call `id` on its chain.
    public mutating func sendMedia(_ id: CallID, _ packet: [UInt8], now: Int64) -> [Action] {
        send(call: id.raw, CallInner.media(packet).serialize(), now: now)
    }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [Action] {
        var out: [Action] = []
        if datagram.first == DHTWire.marker {
            run(dht.receive(datagram, from: Self.endpoint(sender), nowMs: now), now: now, into: &out)
        } else {
            run(links.receive(datagram, from: sender, now: now), now: now, into: &out)
        }
        publishIfDue(now: now, into: &out)
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
        if let due = dht.nextDeadline, due <= now { run(dht.tick(nowMs: now), now: now, into: &out) }
        if let due = resolver.nextDeadline, due <= now { run(resolver.tick(now: now), now: now, into: &out) }
        publishIfDue(now: now, into: &out)
        return Self.inPathOrder(out)
    }

    public var nextDeadline: Int64? {
        let cores = min(min(links.nextDeadline ?? .max, gossip.nextDeadline), min(relay.nextDeadline ?? .max, calls.nextDeadline ?? .max))
        let next = min(min(cores, dht.nextDeadline ?? .max), min(resolver.nextDeadline ?? .max, presence?.nextCheck ?? .max))
        return next == .max ? nil : next
    }

    /// The linked neighbours as DHT contacts: the relays a presence record lists.
    private var neighbourContacts: [Contact] {
        links.upPeers.compactMap { address in
            links.upPeer(address).map { Contact(id: NodeID(publicKey: $0.publicKey), endpoint: Self.endpoint($0.endpoint)) }
        }
    }

    private mutating func publishIfDue(now: Int64, into out: inout [Action]) {
        guard var policy = presence else { return }
        let contacts = dht.contactCount
        let due = policy.due(now: now, contacts: contacts) { (endpoint, neighbourContacts) }
        if let due { policy.didPublish(due, contacts: contacts) }
        presence = policy
        if let due { publish(due, now: now, into: &out) }
    }

    private mutating func publish(_ reach: PresencePolicy.Reach, now: Int64, into out: inout [Action]) {
        for wallet in hostedKeys {
            run(dht.publish(wallet: wallet, endpoints: reach.endpoints, relays: reach.relays, nowMs: now), now: now, into: &out)
        }
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
        } else if WalletFinder.Message.claims(payload) {
            let gossip = gossip
            run(finder.receive(payload, from: peer, neighbours: links.upPeers, known: { gossip.route(to: $0)?.announcement }, now: now),
                now: now, into: &out)
        } else {
            switch AppMessage(parsing: payload) {
            case .gossip(let message)?:
                run(gossip.receive(message, from: peer, nowMs: now), now: now, into: &out)
            case .resolveRequest(let query, let address)?:
                let reply = AppMessage.resolveReply(query: query, address: address, hosted: calls.hosts(address))
                run(links.send(reply.serialize(), to: peer, now: now), now: now, into: &out)
            case .resolveReply(let query, let address, let hosted)?:
                let actions = resolver.answered(query: query, wallet: address, hosted: hosted, from: peer, now: now) ?? []
                run(actions, now: now, into: &out)
            case nil:
                break
            }
        }
    }

    private mutating func run(_ actions: [DHTAction], now: Int64, into out: inout [Action]) {
        for action in actions {
            switch action {
            case .send(let bytes, let to):
                if let index = Self.index(to) { out.append(.send(bytes, to: index)) }
            case .lookupFinished(let id, let outcome):
                guard let (resolution, wallet) = lookups.removeValue(forKey: id) else { continue }
                run(resolver.dhtAnswered(resolution, HomeResolver.home(of: wallet, outcome, endpoint: Self.index)), now: now, into: &out)
            case .recordStored, .recordDropped, .clockSkew:
                continue
            }
        }
    }

    private mutating func run(_ actions: [WalletFinder.Action], now: Int64, into out: inout [Action]) {
        for action in actions {
            switch action {
            case .send(let bytes, let to): run(links.send(bytes, to: to, now: now), now: now, into: &out)
            case .found(let query, let announcement): run(resolver.found(query: query, home: announcement.origin), now: now, into: &out)
            }
        }
    }

    private mutating func run(_ actions: [HomeResolver<Int>.Action], now: Int64, into out: inout [Action]) {
        for action in actions {
            switch action {
            case .ask(let query, let wallet, let home):
                run(links.send(AppMessage.resolveRequest(query: query, address: wallet).serialize(), to: home, now: now), now: now, into: &out)
            case .refute(let wallet, let home, _):
                run(gossip.refute(wallet, origin: home, nowMs: now), now: now, into: &out)
            case .lookup(let resolution, let wallet):
                let (id, lookup) = dht.findValue(NodeID.key(for: wallet), nowMs: now)
                lookups[id] = (resolution, wallet)
                run(lookup, now: now, into: &out)
            case .find(let query, let wallet):
                run(finder.find(wallet, query: query, ttl: finder.config.maxTTL, neighbours: links.upPeers, now: now), now: now, into: &out)
            case .resolved(let resolution, let home):
                guard let call = resolving.removeValue(forKey: resolution) else { continue }
                out.append(.event(.resolved(wallet: call.callee, home: home.node, source: home.source)))
                out += placeCall(call.id, from: call.caller, to: call.callee, home: home.node, hints: home.hints, bitrate: call.bitrate,
                                 now: now)
            case .failed(let resolution, let why):
                guard resolving.removeValue(forKey: resolution) != nil else { continue }
                out.append(.event(.unresolved(why)))
            }
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
}
