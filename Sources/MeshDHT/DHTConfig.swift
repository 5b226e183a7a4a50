/// Parameters of the DHT (docs/dht.md explains each). Times are milliseconds.
public struct DHTConfig: Sendable {
    /// Bucket size and replication factor: records are stored on the k closest nodes; a lookup ends when the
    /// k closest nodes it knows have answered. At most 20 (a NODES reply carries at most 20 contacts).
    public var k = 20
    /// Requests a lookup keeps in flight.
    public var alpha = 3
    /// A request without an answer after this long has failed.
    public var requestTimeoutMs: Int64 = 1_000
    /// A bucket no lookup has touched for this long is refreshed with a lookup of a random id in its range.
    public var bucketRefreshMs: Int64 = 15 * 60_000
    /// After joining, refresh every bucket farther than the closest neighbour (Kademlia's join), so the table
    /// holds contacts at every distance at once rather than only near the node's own id.
    public var refreshBucketsOnJoin = true
    /// Joining (docs/dht.md, "Joining"): until a bootstrap endpoint answered and the own-id lookup after it got
    /// answers, the join is tried again (bootstrap requests + own-id lookup) after a wait that starts at
    /// `joinRetryMinMs` and doubles up to `joinRetryMaxMs`; each wait is drawn from the upper half of its range
    /// with the node's seeded randomness, so nodes started together do not retry in step.
    public var joinRetryMinMs: Int64 = 1_000
    public var joinRetryMaxMs: Int64 = 30_000
    /// Re-joining: once joined, while the table holds fewer than k contacts the join is repeated, first after
    /// `joinRetryMinMs`, doubling each time up to `rejoinMaxMs`; at once (and the node counts as not joined)
    /// when a lookup got no answer from anyone.
    public var rejoinMaxMs: Int64 = 5 * 60_000
    /// Own records are stored again on the then-closest nodes this often (churn moves the k closest).
    public var republishMs: Int64 = 10 * 60_000
    /// Lifetime of records this node signs itself (`publish(wallet:…)`); they are re-signed with a new
    /// sequence and expiry when less than `renewBeforeMs` is left.
    public var recordTTLms: Int64 = 60 * 60_000
    public var renewBeforeMs: Int64 = 20 * 60_000
    /// Records expiring further ahead than this are refused.
    public var maxExpiryAheadMs: Int64 = 24 * 60 * 60_000
    /// Serialized size limits of a record (a STORE must fit a datagram well under 1200 bytes).
    public var maxRecordBytes = 800
    public var maxEndpoints = 4
    public var maxRelays = 8
    /// Records held for others. When full, a STORE of a new key evicts a record of the source prefix holding
    /// the most, if that is more than the newcomer's prefix holds; otherwise it is refused (`storeFull`).
    public var maxStoredRecords = 20_000
    /// Storage quotas (docs/dht.md, "Storage quotas"): new keys stored per sending node id, and per source
    /// /24 (IPv4) or /64 (IPv6) prefix, every address included; beyond them STOREs of new keys get "full"
    /// (`quotaExceeded`).
    public var maxRecordsPerNode = 500
    public var maxRecordsPerPrefix = 2_000
    /// Per-prefix limits (IPv4 /24, IPv6 /48; loopback and private addresses are exempt): contacts per bucket
    /// and in the whole table.
    public var perPrefixBucketLimit = 2
    public var perPrefixLimit = 10
    /// Contacts kept per bucket to replace entries that stop answering.
    public var replacementCacheSize = 8
    /// A contact is removed after this many failed requests in a row (after one when a replacement waits).
    public var maxFailures = 3
    /// Housekeeping interval of `tick`: bucket refresh, republish, renewal, expiry.
    public var maintenanceIntervalMs: Int64 = 60_000
    /// Messages whose signed timestamp is further than this from `now` are refused (replay bound; requests get
    /// a clock notice); the envelope layer also remembers request ids this long. The link layer's tolerance
    /// for initiations, so links and the DHT accept the same clocks (docs/dht.md, "Clock skew").
    public var maxClockSkewMs: Int64 = 120_000
    /// Bound on the remembered requests (replay cache); when full, requests stamped at or before the oldest
    /// forgotten one are refused (docs/dht.md, "Replay cache").
    public var replayCacheSize = 131_072
    /// Requests per source, before any signature work (token buckets: a sustained rate and a burst); every
    /// address counts, loopback and private included (docs/dht.md, "Rate limits").
    public var requestsPerSecondPerAddress = 200.0
    public var requestBurstPerAddress = 1_000.0
    /// The same per /24 (IPv4) or /64 (IPv6) prefix.
    public var requestsPerSecondPerPrefix = 500.0
    public var requestBurstPerPrefix = 2_500.0
    /// Sources (addresses, prefixes) tracked by the rate limits; beyond it new sources share one budget.
    public var maxTrackedSources = 16_384
    /// Signature recoveries a second (and burst) for requests from addresses that have not proven they receive
    /// at their source (docs/dht.md, "Cookies"). Beyond them the node is under load: such requests get a cookie
    /// reply instead and are handled when they come back with it. STOREs and WITHDRAWs always need a proven
    /// address.
    public var unprovenChecksPerSecond = 200.0
    public var unprovenCheckBurst = 400.0
    /// The same for addresses that answered a request of ours (they can be spoofed too, so they have a budget).
    public var provenChecksPerSecond = 2_000.0
    /// A cookie received is used for requests to that endpoint this long.
    public var cookieReuseMs: Int64 = 60_000
    /// Endpoints that answered a request of ours are proven this long (at most `maxTrackedSources`).
    public var provenMemoryMs: Int64 = 10 * 60_000
    /// PINGs in flight to verify senders of requests before they may enter the table (docs/dht.md, "Who gets
    /// in"); beyond this, unknown requesters are answered but not verified.
    public var maxPendingVerifications = 32
    /// Candidates a lookup keeps (closest first); farther ones are forgotten.
    public var maxLookupCandidates = 100

    public init() {}
}

/// Why a record was refused.
public enum RecordRefusal: String, Sendable, Codable, CaseIterable, CodingKeyRepresentable {
    case badSignature, expired, expiryTooFarAhead, oversized, tooManyEndpoints, tooManyRelays, wrongKey

    var wireCode: UInt8 {
        switch self {
        case .badSignature: 1
        case .expired: 2
        case .expiryTooFarAhead: 3
        case .oversized: 4
        case .tooManyEndpoints: 5
        case .tooManyRelays: 6
        case .wrongKey: 7
        }
    }

    init?(wireCode: UInt8) {
        guard let match = Self.allCases.first(where: { $0.wireCode == wireCode }) else { return nil }
        self = match
    }
}

/// What the DHT dropped, refused and sent, for `node-ctl` and tests.
public struct DHTCounters: Sendable, Codable, Equatable {
    /// Datagrams that did not parse (including a wrong first byte or version).
    public var malformed = 0
    /// Datagrams whose signature did not recover a key, or that claimed to come from this node.
    public var badSignature = 0
    /// Signed timestamps further than `maxClockSkewMs` from now.
    public var staleTimestamp = 0
    /// Requests refused for their timestamp and answered with a clock notice (docs/dht.md, "Clock skew").
    public var clockNoticesSent = 0
    /// Clock notices for a request of this node in flight: another node refused it for this node's clock.
    /// (A notice matching no such request counts as `unexpectedResponse`.)
    public var clockNoticesReceived = 0
    /// Requests seen before (same request id and signature), or stamped at or before the replay cache's
    /// watermark.
    public var replayed = 0
    /// Requests stamped more than 2 s ahead of this node's clock, refused because the replay cache's budget for
    /// such requests was spent (docs/dht.md, "Replay cache").
    public var futureStampedRefused = 0
    /// Requests over their source's rate limits (dropped before signature work).
    public var rateLimited = 0
    /// Requests answered with a cookie (their address was not proven: under load, or a write).
    public var cookiesSent = 0
    /// Cookied requests whose cookie was not this node's for their source (dropped before signature work).
    public var badCookies = 0
    /// Cookies this node got for requests of its own (it sent them again with the cookie).
    public var cookiesReceived = 0
    /// Responses nobody asked for, from the wrong node or endpoint, or of the wrong type.
    public var unexpectedResponse = 0
    /// Records refused, by reason (STOREs and FIND_VALUE answers; a record that does not parse makes its
    /// datagram `malformed`).
    public var refusedRecords: [RecordRefusal: Int] = [:]
    /// STOREs refused because the store holds `maxStoredRecords` and no source holds more than the sender's.
    public var storeFull = 0
    /// STOREs refused by the per-node or per-prefix quota.
    public var quotaExceeded = 0
    /// Records evicted for a STORE from a source holding fewer.
    public var evicted = 0
    /// Contacts kept out of the table by per-prefix limits.
    public var prefixLimited = 0
    /// Answers cut to the size of a request from an unverified address (anti-amplification), or not sent.
    public var trimmedReplies = 0
    /// Requests that timed out.
    public var timeouts = 0
    public var messagesIn = 0
    public var messagesOut = 0
    public var bytesIn = 0
    public var bytesOut = 0
    public var lookupsStarted = 0
    public var lookupsFinished = 0

    public init() {}

    /// Every datagram dropped before the protocol saw it.
    public var dropped: Int { malformed + badSignature + staleTimestamp + replayed + futureStampedRefused + rateLimited }
}
