import Foundation
import MeshDHT
import MeshTestKit

// DHTBench: the churn experiment (MeshTestKit.DHTScenario) on a simulated network, once per churn level, each on a
// copy of the same built network. docs/dht.md describes the scenario and the measured table; Tools/bench-dht runs it.

let usage = """
    usage: DHTBench [--nodes N] [--lookups N] [--records N] [--churn P,P,…] [--window-min M] [--presences N]
                    [--probes N] [--loss P] [--seed S] [--build join|populate]
      --nodes 10000  --lookups 2000  --records 200  --churn 0,10,20,30 (percent of nodes replaced in the window)
      --window-min 10  --presences 3 (new records after the window)  --probes 1000 (lookups per new record)
      --loss 0 (percent of datagrams lost)  --seed 1  --build join (real joins) or populate (tables from global knowledge)
    usage: DHTBench --hostile [N]   amplification of spoofed requests and CPU per forged request (N = 20000)
    """

/// Prints a line at once, also when stdout is a pipe or file (runs take minutes).
func say(_ line: String) {
    print(line)
    fflush(nil)
}

func fail(_ message: String) -> Never {
    print("error: \(message)\n\(usage)")
    exit(64)
}

if CommandLine.arguments.dropFirst().first == "--hostile" {
    let count = CommandLine.arguments.dropFirst(2).first.flatMap { Int($0) } ?? 20_000
    runHostileBench(requests: max(count, 1))
    exit(0)
}

var scenario = DHTScenario()
scenario.nodes = 10_000
scenario.lookups = 2_000
scenario.records = 200
scenario.presences = 3
scenario.probesPerPresence = 1_000
scenario.joinByProtocol = true
var churnLevels = [0.0, 0.1, 0.2, 0.3]

var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    if flag == "--help" || flag == "-h" {
        print(usage)
        exit(0)
    }
    guard let value = arguments.popFirst() else { fail("\(flag) needs a value") }
    func int() -> Int {
        guard let n = Int(value), n >= 0 else { fail("\(flag) \(value): not a count") }
        return n
    }
    switch flag {
    case "--nodes": scenario.nodes = max(int(), 2)
    case "--lookups": scenario.lookups = int()
    case "--records": scenario.records = max(int(), 1)
    case "--presences": scenario.presences = int()
    case "--probes": scenario.probesPerPresence = int()
    case "--window-min": scenario.windowMs = Int64(max(int(), 1)) * 60_000
    case "--seed": scenario.simulator.seed = UInt64(int())
    case "--loss":
        guard let p = Double(value), (0..<100).contains(p) else { fail("--loss \(value): not a percentage") }
        scenario.simulator.lossRate = p / 100
    case "--churn":
        let levels = value.split(separator: ",").map { Double($0).map { $0 / 100 } }
        guard !levels.isEmpty, levels.allSatisfy({ $0 != nil && (0...1).contains($0!) }) else { fail("--churn \(value)") }
        churnLevels = levels.map { $0! }
    case "--build":
        guard value == "join" || value == "populate" else { fail("--build \(value)") }
        scenario.joinByProtocol = value == "join"
    default: fail("unknown flag \(flag)")
    }
}

func seconds(_ duration: Duration) -> String {
    let s = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    return String(format: "%.1f s", s)
}

func fixed(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }

let clock = ContinuousClock()
let config = scenario.simulator.dht
say("DHTBench: \(scenario.nodes) nodes (\(scenario.joinByProtocol ? "joined one by one through the protocol" : "tables populated")), k=\(config.k), α=\(config.alpha), seed \(scenario.simulator.seed), loss \(fixed(scenario.simulator.lossRate * 100)) %")
say("latency: one-way \(fixed(scenario.simulator.minLatencyMs, 0))–\(fixed(scenario.simulator.minLatencyMs + scenario.simulator.spanLatencyMs, 0)) ms (+≤\(fixed(scenario.simulator.jitter * 100, 0)) % jitter); request timeout \(config.requestTimeoutMs) ms")
say("per churn level: \(scenario.records) records, \(scenario.lookups) value lookups over \(scenario.windowMs / 60_000) min while that share of nodes is replaced; then \(scenario.presences) new presences × \(scenario.probesPerPresence) lookups")
var built: DHTSimulator?
let buildTime = clock.measure { built = scenario.build() }
say("network built in \(seconds(buildTime)) (\(built!.datagramsSent) datagrams)\n")

say("| churn | lookups | success | rounds median / p95 / p99 | messages mean / p99 (> 3·α·rounds + k) | lookup ms median / p99 | new presence: stored after / findable everywhere (found by) | isolated nodes | wall |")
say("|---|---|---|---|---|---|---|---|---|")
for level in churnLevels {
    var run = scenario
    run.churn = level
    var report: DHTScenarioReport?
    let wall = clock.measure { report = run.run(on: built!) }
    let r = report!
    let q = { (values: [Int], p: Double) in DHTScenarioReport.quantile(values, p).map(String.init) ?? "–" }
    let mean = r.messages.isEmpty ? 0 : Double(r.messages.reduce(0, +)) / Double(r.messages.count)
    let presence = r.presences.map { p in
        let stored = p.storedAfterMs.map { "\($0) ms" } ?? "–"
        let everywhere = p.findableEverywhereMs.map { "\($0) ms" } ?? "not everywhere"
        return "\(stored) / \(everywhere) (\(p.probesFound)/\(p.probes))"
    }.joined(separator: "; ")
    let ms = r.elapsedMs.map(Int.init)
    say("| \(Int((level * 100).rounded())) % | \(r.started) | \(fixed(r.successRate * 100, 2)) % | \(q(r.rounds, 0.5)) / \(q(r.rounds, 0.95)) / \(q(r.rounds, 0.99)) | \(fixed(mean)) / \(q(r.messages, 0.99)) (\(r.overMessageBound)) | \(q(ms, 0.5)) / \(q(ms, 0.99)) | \(presence) | \(r.isolated) | \(seconds(wall)) |")
}
