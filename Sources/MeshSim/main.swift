import Foundation
import MeshCall
import MeshIdentity
import MeshNodeCore
import MeshTestKit

// MeshSim: whole nodes (the daemon's own NodeCore) at scale on the simulated network (docs/architecture.md,
// "Simulator"): links and gossip converge, every node joins the DHT, calls beyond gossip's radius find their callee
// and ride relay chains, media flows, relays die under the calls and the calls move to other chains. Tools/sim
// builds and runs it; IntegrationTests/MeshSimTests runs it at 300 nodes.

let usage = """
    usage: MeshSim [--nodes N] [--calls N] [--seed S] [--loss P] [--json]
      --nodes 300  --calls 20 (each to a wallet 3–6 links away)  --seed 1  --loss 1 (percent of datagrams lost)
      --json: one JSON object instead of lines; the exit status is 1 when a check failed (see "failures")
    """

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("MeshSim: \(message)\n\(usage)\n".utf8))
    exit(64)
}

var (nodes, callCount, seed, lossPercent, json) = (300, 20, UInt64(1), 1.0, false)
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    switch flag {
    case "--help", "-h":
        print(usage)
        exit(0)
    case "--json":
        json = true
        continue
    default:
        break
    }
    guard let value = arguments.popFirst() else { fail("\(flag) needs a value") }
    switch flag {
    case "--nodes":
        guard let n = Int(value), (10...16_000).contains(n) else { fail("--nodes \(value): a count from 10 to 16000") }
        nodes = n
    case "--calls":
        guard let n = Int(value), n >= 0 else { fail("--calls \(value): not a count") }
        callCount = n
    case "--seed":
        guard let n = UInt64(value) else { fail("--seed \(value): not a number") }
        seed = n
    case "--loss":
        guard let p = Double(value), (0..<50).contains(p) else { fail("--loss \(value): a percentage below 50") }
        lossPercent = p
    default:
        fail("unknown flag \(flag)")
    }
}

/// What a run found, as `--json` prints it.
struct Report: Encodable {
    var nodes = 0
    var links = 0
    var seed: UInt64 = 0
    var lossPercent = 0.0
    var routesChecked = 0
    var convergenceFaults = 0
    /// Wallets within gossip's radius in links whose cheapest route is longer (found through the DHT instead).
    var gossipMissing = 0
    var callsPlaced = 0
    var callsEstablished = 0
    var foundBy: [String: Int] = [:]
    var meanChainNodes = 0.0
    var mediaSent = 0
    var mediaReceived = 0
    var relaysKilled = 0
    var callsMoved = 0
    var callsSurvived = 0
    /// Calls whose ends no path of at most 6 links joins once the relays died: they cannot survive.
    var callsCut = 0
    var unknownWalletRefused = false
    var datagramsSent = 0
    var datagramsLost = 0
    var virtualSeconds = 0.0
    var wallSeconds = 0.0
    var failures: [String] = []
}

let started = Date()
var report = Report()
report.seed = seed
report.lossPercent = lossPercent
@MainActor
func say(_ line: String) {
    guard !json else { return }
    print(line)
    fflush(nil)
}

var mesh = OverlayMesh(count: nodes, seed: seed, lossRate: lossPercent / 100, linkCosts: .measured)
report.nodes = nodes
report.links = mesh.edges.count
@MainActor
func advance(_ ms: Int64) {
    for fault in mesh.run(forMs: ms) { report.failures.append("early tick: \(fault)") }
}

// 1. Links and gossip.
advance(20_000)
let (routes, faults, missing) = mesh.convergence(over: mesh.edges)
(report.routesChecked, report.convergenceFaults, report.gossipMissing) = (routes, faults.count, missing)
report.failures += faults.prefix(5).map { "not converged: \($0)" }
say("\(nodes) nodes, \(mesh.edges.count) links: \(routes) wallets within gossip's radius checked, \(faults.count) wrong, "
    + "\(missing) not in gossip (their cheapest route is longer than the radius)")

// 2. The DHT: every node joins through its lowest-numbered neighbour.
for i in mesh.sim.nodes.indices {
    guard let neighbour = mesh.neighbours(of: i).first else { continue }
    mesh.drive(i) { $0.join(bootstrap: [neighbour], now: $1) }
}
advance(20_000)
say("DHT joined: \(mesh.sim.nodes.reduce(0) { $0 + $1.core.dht.contactCount } / nodes) contacts per node")

// 3. Calls beyond gossip's radius, one per wallet.
struct Call {
    let id: CallID
    let caller: Int
    let callee: Int
}
let distance = mesh.distances(over: mesh.edges)
var calls: [Call] = []
var busy = Set<Int>()
var rng = SplitMix64(seed: seed ^ 0xCA11)
for caller in mesh.sim.nodes.indices.shuffled(using: &rng) where calls.count < callCount && !busy.contains(caller) {
    guard let callee = mesh.sim.nodes.indices.first(where: { (3...6).contains(distance[caller][$0]) && !busy.contains($0) && $0 != caller })
    else { continue }
    busy.formUnion([caller, callee])
    let call = Call(id: CallID(raw: 0xCA11_0000 + UInt64(calls.count)), caller: caller, callee: callee)
    calls.append(call)
    let (from, to) = (mesh.walletKeys[caller], mesh.wallets[callee])
    mesh.drive(caller) { $0.place(call.id, from: from, to: to, now: $1) }
}
let nobody = Call(id: CallID(raw: 0xDEAD), caller: calls.first?.caller ?? 0, callee: -1)
let stranger = mesh.walletKeys[nobody.caller]
let unknownWallet = mesh.sim.rng.privateKey().address
mesh.drive(nobody.caller) { $0.place(nobody.id, from: stranger, to: unknownWallet, now: $1) }
report.callsPlaced = calls.count
if calls.count < callCount { report.failures.append("only \(calls.count) of \(callCount) calls found a callee 3–6 links away") }
advance(5_000)

@MainActor
func isActive(_ call: Call) -> Bool {
    mesh.sim.nodes[call.caller].core.calls.calls[call.id]?.state == .active
        && mesh.sim.nodes[call.callee].core.calls.calls[call.id]?.state == .active
}
@MainActor
func activeChain(_ call: Call) -> [Int] {
    let chain = mesh.sim.nodes[call.caller].core.relay.chains(call: call.id.raw, now: mesh.sim.nowMs).first { $0.role == "active" }
    return chain?.nodes.compactMap { node in mesh.addresses.firstIndex { $0.checksummed == node } } ?? []
}
var chainNodes = 0
for call in calls {
    let home = mesh.events(at: call.caller).compactMap { if case .placed(call.id, let home, _) = $0 { home } else { nil } }.first
    if let home { report.foundBy[home.source, default: 0] += 1 }
    let chain = activeChain(call)
    guard isActive(call), home?.node == mesh.addresses[call.callee], chain.last == call.callee, chain.count >= distance[call.caller][call.callee]
    else {
        let why = mesh.events(at: call.caller).compactMap { if case .notPlaced(call.id, let why) = $0 { why } else { nil } }.first
        report.failures.append("call \(call.caller)→\(call.callee) (\(distance[call.caller][call.callee]) links) not established: \(why ?? "chain \(chain)")")
        continue
    }
    report.callsEstablished += 1
    chainNodes += chain.count
}
report.meanChainNodes = report.callsEstablished == 0 ? 0 : Double(chainNodes) / Double(report.callsEstablished)
report.unknownWalletRefused = mesh.events(at: nobody.caller).contains {
    if case .notPlaced(nobody.id, let why) = $0 { why.contains("is not online") } else { false }
}
if !report.unknownWalletRefused { report.failures.append("a call to a wallet nobody hosts was not refused with the DHT's reason") }
say("\(report.callsEstablished) of \(calls.count) calls established, found by \(report.foundBy), chains of \(report.meanChainNodes) nodes on average")

// 4. Media both ways, a packet every 100 ms per end: at least 25 of 30 must arrive at each end.
@MainActor
func media(at node: Int, _ id: CallID) -> Int { mesh.events(at: node).count { if case .callBytes(id, .media) = $0 { true } else { false } } }
@MainActor
func talk(_ ms: Int64) {
    for _ in 0..<ms / 100 {
        for call in calls {
            mesh.drive(call.caller) { $0.sendMedia(call.id, [0x80, 0], now: $1) }
            mesh.drive(call.callee) { $0.sendMedia(call.id, [0x80, 1], now: $1) }
            report.mediaSent += 2
        }
        advance(100)
    }
}
talk(3_000)
for call in calls where isActive(call) {
    let (atCaller, atCallee) = (media(at: call.caller, call.id), media(at: call.callee, call.id))
    if atCaller < 25 || atCallee < 25 {
        report.failures.append("call \(call.caller)→\(call.callee): \(atCaller) and \(atCallee) of 30 media packets through its chain")
    }
}

// 5. The first relay of every established call's chain dies (not an end of any call); the calls move.
var killed = Set<Int>()
for call in calls where isActive(call) {
    guard let relay = activeChain(call).first, relay != call.callee, !busy.contains(relay) else { continue }
    if killed.insert(relay).inserted { mesh.sim.kill(relay) }
}
report.relaysKilled = killed.count
talk(15_000)
let survivors = mesh.distances(over: mesh.edges.filter { !killed.contains($0.a) && !killed.contains($0.b) })
let before = calls.map { (media(at: $0.caller, $0.id), media(at: $0.callee, $0.id)) }
talk(2_000)
for (call, (atCaller, atCallee)) in zip(calls, before) {
    let moved = mesh.events(at: call.caller).contains { if case .chainSwitched(call.id, _, _, _) = $0 { true } else { false } }
    if moved { report.callsMoved += 1 }
    let flowing = media(at: call.caller, call.id) - atCaller >= 15 && media(at: call.callee, call.id) - atCallee >= 15
    let chain = activeChain(call)
    if isActive(call), flowing, !chain.contains(where: killed.contains) {
        report.callsSurvived += 1
    } else if survivors[call.caller][call.callee] > 6 {
        report.callsCut += 1
    } else if report.failures.count < 40 {
        let story = mesh.events(at: call.caller).compactMap { event -> String? in
            switch event {
            case .chainSwitched(call.id, _, let to, let why): "switched to \(to.compactMap { mesh.addresses.firstIndex(of: $0) }) (\(why))"
            case .chainLost(call.id, let why): "chain lost (\(why))"
            case .ended(call.id, let reason, _): "ended (\(reason))"
            default: nil
            }
        }
        report.failures.append("call \(call.caller)→\(call.callee) (\(survivors[call.caller][call.callee]) links left): "
                               + "media \(flowing ? "" : "not ")flowing, chain \(chain); \(story.joined(separator: "; "))")
    }
}
report.mediaReceived = calls.reduce(0) { $0 + media(at: $1.caller, $1.id) + media(at: $1.callee, $1.id) }
say("\(killed.count) relays killed: \(report.callsMoved) calls moved to another chain, \(report.callsSurvived) of \(calls.count) still talking, "
    + "\(report.callsCut) cut off (no path of at most 6 links left)")

report.datagramsSent = mesh.sim.datagramsSent
report.datagramsLost = mesh.sim.datagramsLost
report.virtualSeconds = Double(mesh.sim.nowMs - MeshSimulator<OverlayNode>.Config().startMs) / 1000
report.wallSeconds = (Date().timeIntervalSince(started) * 10).rounded() / 10
say("\(report.datagramsSent) datagrams (\(report.datagramsLost) lost), \(report.virtualSeconds) s simulated in \(report.wallSeconds) s")
if json {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: try encoder.encode(report), as: UTF8.self))
} else {
    for failure in report.failures { print("FAILED: \(failure)") }
}
exit(report.failures.isEmpty ? 0 : 1)
