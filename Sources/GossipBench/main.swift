import Foundation
import MeshIdentity
import MeshRouting

// GossipBench: what checking signed host announcements costs (docs/gossip.md, "Benchmark"): one signature
// check, a 10-entry update of new announcements, the same update again (verified cache), and one neighbour
// flooding forged entries as fast as it can (the per-neighbour budget bounds the work). Tools/bench-gossip runs it.

func say(_ line: String) {
    print(line)
    fflush(nil)
}

func clockMs() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }

/// Mean wall time of `body` over `runs` runs, in µs.
func measure(_ runs: Int, _ body: (Int) -> Void) -> Double {
    let start = clockMs()
    for i in 0..<runs { body(i) }
    return (clockMs() - start) * 1000 / Double(runs)
}

let expires = UInt32(600)
let origin = PrivateKey().address
let walletKeys = (0..<2_000).map { _ in PrivateKey() }
let announcements = walletKeys.map { HostAnnouncement.sign(wallet: $0, origin: origin, sequence: 1, expiresAtS: expires) }

var authentic = 0
let perCheck = measure(announcements.count) { if announcements[$0].isAuthentic { authentic += 1 } }
precondition(authentic == announcements.count)
say(String(format: "signature check (isAuthentic)             %7.1f µs", perCheck))

/// Updates of `GossipMessage.maxEntries` entries each, from `list`.
func updates(_ list: [HostAnnouncement]) -> [[UInt8]] {
    stride(from: 0, to: list.count, by: GossipMessage.maxEntries).map { start in
        GossipMessage.update(list[start..<min(start + GossipMessage.maxEntries, list.count)].map { GossipEntry($0, hops: 0, metric: 0) }, table: 0)
            .serialize()
    }
}

// Each update into a fresh engine (so the table stays small and the figure is the checking, not the table):
// first with 10 new announcements, then the same update again.
let genuine = updates(announcements)
var freshUs = 0.0, cachedUs = 0.0, checks = 0
for message in genuine {
    var engine = GossipEngine(local: PrivateKey().address, hosted: [], sequence: 1, nowMs: 0)
    let neighbour = PrivateKey().address
    _ = engine.neighbourUp(neighbour, cost: 1, nowMs: 0)
    freshUs += measure(1) { _ in _ = engine.receive(message, from: neighbour, nowMs: 0) }
    cachedUs += measure(1) { _ in _ = engine.receive(message, from: neighbour, nowMs: 0) }
    checks += engine.counters.verifications
}
precondition(checks == announcements.count)
say(String(format: "update of 10 new announcements           %7.1f µs  (10 checks)", freshUs / Double(genuine.count)))
say(String(format: "same update again (verified cache)       %7.1f µs  (0 checks)", cachedUs / Double(genuine.count)))

// The same updates again into one engine that holds all 2,000 routes: what a message costs with a full table.
var config = GossipConfig()
config.maxRoutesPerNeighbour = announcements.count
config.verificationsPerSecond = 1e9
config.verificationBurst = 1e9
var full = GossipEngine(local: PrivateKey().address, hosted: [], sequence: 1, config: config, nowMs: 0)
let neighbour = PrivateKey().address
_ = full.neighbourUp(neighbour, cost: 1, nowMs: 0)
for message in genuine { _ = full.receive(message, from: neighbour, nowMs: 0) }
let withTable = measure(genuine.count) { _ = full.receive(genuine[$0], from: neighbour, nowMs: 0) }
precondition(full.routes(nowMs: 0).count == announcements.count)
say(String(format: "same update, table of 2,000 routes       %7.1f µs  (0 checks)", withTable))

// One neighbour sends forged entries (new wallet, attacker's signature) for 2 simulated seconds at 20,000
// entries per second, with the default budget.
let attacker = PrivateKey()
let forged = (0..<4_000).map { _ in
    var a = HostAnnouncement.sign(wallet: attacker, origin: attacker.address, sequence: 1, expiresAtS: expires)
    a.wallet = PrivateKey().address
    return a
}
var guarded = GossipEngine(local: PrivateKey().address, hosted: [], sequence: 1, nowMs: 0)
_ = guarded.neighbourUp(attacker.address, cost: 1, nowMs: 0)
let flood = updates(forged)
let start = clockMs()
for (i, message) in flood.enumerated() { _ = guarded.receive(message, from: attacker.address, nowMs: Int64(i) * 2_000 / Int64(flood.count)) }
let spentMs = clockMs() - start
say(String(format: "forged flood, 20,000 entries/s for 2 s:   %d checks, %d deferred, %.1f ms CPU (%.1f ms per second)",
           guarded.counters.verifications, guarded.counters.deferred, spentMs, spentMs / 2))
