import MeshDHT
import MeshIdentity
import MeshWire

/// "Who hosts this wallet?" for a call or `node-ctl route` (docs/routing.md, "Wallet → home node"). Pure: the
/// shell starts a resolution with what gossip knows, runs the actions (ask the home node, refute a route, look up
/// the DHT, query over links), feeds the answers back and ticks it at `nextDeadline`.
///
/// The order: a gossip route whose home node is not linked is taken as it is; one whose home node is a linked
/// neighbour is first confirmed by that node ("do you host this wallet?"), and a no or `answerMs` of silence
/// refutes it. Without a (confirmed) route, the DHT lookup and a query over links race: the first answer wins,
/// the query over links gives up after `answerMs`, and when both fail the DHT's failure is the one reported.
public struct HomeResolver<Endpoint: Sendable>: Sendable {
    /// Where a callee is: its home node, how that was learned, and from its presence record the home node's relays
    /// and the endpoints to dial (the home node's and its relays', each with the node key to pin).
    public struct Home: Sendable {
        public var node: WalletAddress
        public var source: String
        public var hints: [WalletAddress]
        public var dial: [(endpoint: Endpoint, node: WalletAddress)]

        public init(node: WalletAddress, source: String, hints: [WalletAddress] = [],
                    dial: [(endpoint: Endpoint, node: WalletAddress)] = []) {
            self.node = node
            self.source = source
            self.hints = hints
            self.dial = dial
        }
    }

    public typealias ID = UInt64

    public enum Action: Sendable {
        /// Ask `home`, a linked neighbour, whether it hosts `wallet` (a resolve request with `query`).
        case ask(query: UInt32, wallet: WalletAddress, home: WalletAddress)
        /// `home` did not confirm the gossip route to `wallet` (`why`): withdraw it from gossip.
        case refute(wallet: WalletAddress, home: WalletAddress, why: String)
        /// Look up `wallet`'s presence record in the DHT and report it with `dhtAnswered(_:_:)`.
        case lookup(ID, wallet: WalletAddress)
        /// Ask the neighbours who hosts `wallet` (WalletFinder) with `query`; report an answer with `found(query:home:)`.
        case find(query: UInt64, wallet: WalletAddress)
        case resolved(ID, Home)
        case failed(ID, String)
    }

    /// Why the DHT found no home node (its message is the one a caller sees when both ways fail).
    public struct Failure: Error, Sendable {
        public let message: String
        public init(_ message: String) { self.message = message }
    }

    /// What a DHT lookup for `wallet` says of its home node, for `dhtAnswered`: from its presence record the node, its
    /// relays and the endpoints to dial (the home node's and its relays', each with the node key to pin; `endpoint`
    /// makes the shell's endpoint of a record's, nil for one it cannot use).
    public static func home(of wallet: WalletAddress, _ outcome: LookupOutcome, endpoint: (DHTEndpoint) -> Endpoint?) -> Result<Home, Failure> {
        guard let record = outcome.record, !record.isWithdrawal else {
            return .failure(Failure("\(wallet) is not online: gossip has no route and the DHT has no record (\(outcome.queried) nodes asked"
                                    + (outcome.clockSkewNote.map { "; \($0)" } ?? "") + ")"))
        }
        let node = record.homeNode.address
        var dial = record.endpoints.compactMap { endpoint($0).map { (endpoint: $0, node: node) } }
        dial += record.relays.compactMap { relay in endpoint(relay.endpoint).map { (endpoint: $0, node: relay.id.address) } }
        return .success(Home(node: node, source: "DHT presence record", hints: record.relays.map(\.id.address), dial: dial))
    }

    /// How long a home node has to confirm a route, and a query over links to be answered.
    public static var answerMs: Int64 { 2_000 }

    /// The DHT's side of the race.
    enum DHTAnswer {
        case pending
        case failed(String)
    }

    enum State {
        /// Waiting for the gossip route's home node to confirm it.
        case confirming(query: UInt32, home: WalletAddress, deadline: Int64)
        /// The DHT and the query over links racing; the query's deadline (the DHT's lookups time out on their own),
        /// and whether it passed.
        case racing(dht: DHTAnswer, linksGaveUp: Bool, query: UInt64, deadline: Int64)
    }

    struct Pending {
        let wallet: WalletAddress
        var state: State
    }

    private var pending: [ID: Pending] = [:]
    private var nextID: ID = 0
    /// Query ids come from here: the system CSPRNG in a node (a neighbour that could predict them could spoil
    /// queries over links by sending their ids first), a seeded stream in tests.
    private let random: @Sendable (Int) -> [UInt8]

    public init(random: @escaping @Sendable (Int) -> [UInt8]) { self.random = random }

    private func next() -> UInt64 { random(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }

    /// Resolutions under way.
    public var count: Int { pending.count }

    /// Starts resolving `wallet`; `route` is gossip's home node for it, if any, and whether a link to that node is up.
    public mutating func resolve(_ wallet: WalletAddress, route: (home: WalletAddress, linked: Bool)?, now: Int64) -> (ID, [Action]) {
        nextID += 1
        let id = nextID
        guard let route else { return (id, race(id, wallet, now: now)) }
        guard route.linked else { return (id, [.resolved(id, Home(node: route.home, source: "gossip"))]) }
        var query = UInt32(truncatingIfNeeded: next())
        while isAsking(query) { query = UInt32(truncatingIfNeeded: next()) }
        pending[id] = Pending(wallet: wallet, state: .confirming(query: query, home: route.home, deadline: now + Self.answerMs))
        return (id, [.ask(query: query, wallet: wallet, home: route.home)])
    }

    /// A home node's answer to `ask`; nil when nothing asked `from` that (an unsolicited or late answer).
    public mutating func answered(query: UInt32, wallet: WalletAddress, hosted: Bool, from node: WalletAddress,
                                  now: Int64) -> [Action]? {
        guard let id = pending.first(where: { entry in
            guard case .confirming(query, node, _) = entry.value.state else { return false }
            return entry.value.wallet == wallet
        })?.key else { return nil }
        guard hosted else { return notConfirmed(id, home: node, why: "\(node) does not host \(wallet)", now: now) }
        pending[id] = nil
        return [.resolved(id, Home(node: node, source: "gossip, confirmed by the home node"))]
    }

    /// The DHT lookup's outcome: the home node with what its record says, or why there is none.
    public mutating func dhtAnswered(_ id: ID, _ result: Result<Home, Failure>) -> [Action] {
        guard case .racing(_, let linksGaveUp, let query, let deadline)? = pending[id]?.state else { return [] }
        switch result {
        case .success(let home):
            pending[id] = nil
            return [.resolved(id, home)]
        case .failure(let failure):
            if linksGaveUp {
                pending[id] = nil
                return [.failed(id, failure.message)]
            }
            pending[id]?.state = .racing(dht: .failed(failure.message), linksGaveUp: false, query: query, deadline: deadline)
            return []
        }
    }

    /// A neighbour's authentic answer to the query over links: `home` hosts the wallet. Taken even after the query
    /// gave up, while the DHT has not answered either.
    public mutating func found(query: UInt64, home: WalletAddress) -> [Action] {
        guard let id = pending.first(where: { entry in
            guard case .racing(_, _, query, _) = entry.value.state else { return false }
            return true
        })?.key else { return [] }
        pending[id] = nil
        return [.resolved(id, Home(node: home, source: "a query over links"))]
    }

    /// The earliest deadline of a confirmation or a query over links.
    public var nextDeadline: Int64? {
        var next: Int64?
        for entry in pending.values {
            let deadline: Int64
            switch entry.state {
            case .confirming(_, _, let at): deadline = at
            case .racing(_, false, _, let at): deadline = at
            case .racing: continue
            }
            next = min(next ?? deadline, deadline)
        }
        return next
    }

    /// Gives up on confirmations and queries over links whose time is up.
    public mutating func tick(now: Int64) -> [Action] {
        var actions: [Action] = []
        for id in pending.keys.sorted() {
            guard let entry = pending[id] else { continue }
            switch entry.state {
            case .confirming(_, let home, let deadline) where deadline <= now:
                actions += notConfirmed(id, home: home, why: "\(home) did not answer for \(entry.wallet) within \(Self.answerMs / 1000) s",
                                        now: now)
            case .racing(let dht, false, let query, let deadline) where deadline <= now:
                if case .failed(let message) = dht {
                    pending[id] = nil
                    actions.append(.failed(id, message))
                } else {
                    pending[id]?.state = .racing(dht: dht, linksGaveUp: true, query: query, deadline: deadline)
                }
            default:
                continue
            }
        }
        return actions
    }

    private func isAsking(_ query: UInt32) -> Bool {
        pending.values.contains { if case .confirming(query, _, _) = $0.state { true } else { false } }
    }

    private mutating func notConfirmed(_ id: ID, home: WalletAddress, why: String, now: Int64) -> [Action] {
        guard let wallet = pending[id]?.wallet else { return [] }
        return [.refute(wallet: wallet, home: home, why: why)] + race(id, wallet, now: now)
    }

    private mutating func race(_ id: ID, _ wallet: WalletAddress, now: Int64) -> [Action] {
        let query = next()
        pending[id] = Pending(wallet: wallet, state: .racing(dht: .pending, linksGaveUp: false, query: query, deadline: now + Self.answerMs))
        return [.lookup(id, wallet: wallet), .find(query: query, wallet: wallet)]
    }
}
