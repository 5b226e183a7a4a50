import MeshIdentity
@testable import MeshLink
import MeshTestKit
import MeshWire
import Testing

/// Test endpoints are small integers; each is its own host for the rate limit.
extension Int: LinkEndpoint {
    public var cookieBytes: [UInt8] { withUnsafeBytes(of: self.bigEndian, Array.init) }
    public var rateLimitKey: [UInt8] { cookieBytes }
}

/// Two (or more) link managers on a virtual network: endpoint = index, time passed in.
struct LinkTestNet {
    var nodes: [LinkManager<Int>]
    var now: Int64 = 1_700_000_000_000
    var delivered: [Int: [(payload: [UInt8], from: WalletAddress)]] = [:]
    var ups: [Int: [WalletAddress]] = [:]
    var downs: [Int: [WalletAddress]] = [:]
    var refused: [Int: [String]] = [:]
    /// Every datagram that crossed the network, for replay and tampering tests.
    var wire: [(from: Int, to: Int, bytes: [UInt8])] = []
    /// Datagrams to drop (by predicate on sender and receiver).
    var drop: (Int, Int) -> Bool = { _, _ in false }
    /// How far a node's wall clock is off the network's (ms); every node's monotonic clock is `now`.
    var clockOffset: [Int: Int64] = [:] {
        didSet { for i in nodes.indices { nodes[i].clock = WallClock(offsetMs: clockOffset[i, default: 0]) } }
    }

    init(count: Int, config: LinkConfig = LinkConfig()) {
        nodes = (0..<count).map { LinkManager<Int>(identity: PrivateKey(), config: config, random: .seeded(42 + UInt64($0))) }
    }

    func address(_ i: Int) -> WalletAddress { nodes[i].localAddress }

    /// Runs the actions node `i` produced, delivering datagrams synchronously (zero latency) until quiet.
    mutating func run(_ actions: [LinkAction<Int>], at i: Int) {
        var queue = actions.map { (i, $0) }
        while !queue.isEmpty {
            let (node, action) = queue.removeFirst()
            switch action {
            case .send(let bytes, let to):
                wire.append((node, to, bytes))
                if drop(node, to) || !nodes.indices.contains(to) { continue }
                let out = nodes[to].receive(bytes, from: node, now: now)
                queue += out.map { (to, $0) }
            case .deliver(let payload, let from):
                delivered[node, default: []].append((payload, from))
            case .up(let peer, _):
                ups[node, default: []].append(peer)
            case .down(let peer, _):
                downs[node, default: []].append(peer)
            case .refused(_, let reason):
                refused[node, default: []].append(reason)
            }
        }
    }

    mutating func connect(_ i: Int, to j: Int, pinned: WalletAddress? = nil) {
        let actions = nodes[i].connect(to: j, pinned: pinned, now: now)
        run(actions, at: i)
    }

    mutating func send(_ payload: [UInt8], from i: Int, to j: Int) {
        let actions = nodes[i].send(payload, to: address(j), now: now)
        run(actions, at: i)
    }

    /// Advances virtual time in steps, ticking every node.
    mutating func advance(_ ms: Int64, step: Int64 = 100) {
        var left = ms
        while left > 0 {
            let d = min(step, left)
            now += d
            left -= d
            for i in nodes.indices {
                // Every scenario checks `nextDeadline` too: a tick before it must do nothing (the node would not run it).
                if let deadline = nodes[i].nextDeadline, now < deadline {
                    var early = nodes[i]
                    #expect(early.tick(now: now).isEmpty, "node \(i) ticked at \(now), before its deadline \(deadline), acted")
                }
                let actions = nodes[i].tick(now: now)
                run(actions, at: i)
            }
        }
    }

    /// Feeds raw bytes to node `to` as if they came from endpoint `from`.
    mutating func inject(_ bytes: [UInt8], from: Int, to: Int) {
        let actions = nodes[to].receive(bytes, from: from, now: now)
        run(actions, at: to)
    }
}
