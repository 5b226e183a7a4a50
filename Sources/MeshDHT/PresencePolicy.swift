/// When a node publishes its hosted wallets' presence records, and with what (docs/dht.md, "Presence"). Pure: the
/// shell asks it at the end of every turn of its loop (`due`) and publishes what it returns.
///
/// - **Reach.** The endpoints are `--advertise`, else the bound address when it is a specific one; a relay-only
///   node publishes none. The relays are the first `maxRelays` linked neighbours.
/// - **Republish when reach changes**, checked every `reachCheckMs` (links come and go).
/// - **While the routing table fills after start** (`joinWindowMs`), the same records are published again each
///   time the table has doubled since the last publication, so they land on the nodes that are really closest.
public struct PresencePolicy: Sendable {
    public struct Reach: Equatable, Sendable {
        public var endpoints: [DHTEndpoint]
        public var relays: [Contact]

        public init(endpoints: [DHTEndpoint], relays: [Contact]) {
            self.endpoints = endpoints
            self.relays = relays
        }
    }

    public static var reachCheckMs: Int64 { 2_000 }
    public static var joinWindowMs: Int64 { 60_000 }
    /// Relays listed in a presence record (the DHT caps them too).
    public static var maxRelays: Int { 4 }

    let relayOnly: Bool
    let advertised: [DHTEndpoint]
    let startedAt: Int64
    /// The reach of the records last published.
    public private(set) var published: Reach?
    private var contactsAtLastPublish = 0
    public private(set) var nextCheck: Int64

    public init(relayOnly: Bool, advertised: [DHTEndpoint], now: Int64) {
        self.relayOnly = relayOnly
        self.advertised = advertised
        startedAt = now
        nextCheck = now
    }

    /// The reach to publish: `bound` is the node's bound address (nil when unknown), `neighbours` its linked
    /// neighbours in a stable order.
    public func reach(bound: DHTEndpoint?, neighbours: [Contact]) -> Reach {
        var endpoints = relayOnly ? [] : advertised
        if endpoints.isEmpty, !relayOnly, let bound, !bound.ip.allSatisfy({ $0 == 0 }) { endpoints = [bound] }
        return Reach(endpoints: endpoints, relays: Array(neighbours.prefix(Self.maxRelays)))
    }

    /// What to publish now, if anything: the current reach (`reach` of what `current` says, asked only when it is
    /// needed) when it changed since the last publication (looked at every `reachCheckMs`), or during the join window
    /// when the routing table (`contacts` entries) doubled.
    public mutating func due(now: Int64, contacts: Int, current: () -> (bound: DHTEndpoint?, neighbours: [Contact])) -> Reach? {
        if now >= nextCheck {
            nextCheck = now + Self.reachCheckMs
            let (bound, neighbours) = current()
            let reach = reach(bound: bound, neighbours: neighbours)
            if reach != published { return reach }
        }
        guard now - startedAt < Self.joinWindowMs, contacts >= max(2 * contactsAtLastPublish, 1) else { return nil }
        let (bound, neighbours) = current()
        return reach(bound: bound, neighbours: neighbours)
    }

    /// The records were published with `reach` while the routing table held `contacts` entries.
    public mutating func didPublish(_ reach: Reach, contacts: Int) {
        published = reach
        contactsAtLastPublish = contacts
    }
}
