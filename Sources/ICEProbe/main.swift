import Foundation
import MeshICE

/// ice-probe: one ICE agent (MeshICE, libnice) that finds a path to a peer ice-probe and measures it
/// (docs/ice.md, "ice-probe"). The two exchange credentials and trickled candidates through files in a shared
/// directory (`--dir`): each appends lines to `<role>.sig` and reads the other's — the node will use its call
/// signalling instead. The controlling side then sends `--pings` echo requests over the selected pair, the
/// controlled side echoes them, both hold the path `--hold` seconds (measuring their own CPU), and each prints one
/// JSON document. Exit status 0 when a pair was selected (and, for the controlling side, every ping answered
/// or at least one when there was loss), 1 otherwise.

struct Options {
    var controlling = true
    var dir = ""
    var settings = ICESettings()
    var timeout = 10.0
    var pings = 20
    var hold = 0.0

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var rest = arguments[...]
        func value(_ flag: String) -> String {
            guard let v = rest.popFirst() else { fail("\(flag) needs a value") }
            return v
        }
        func hostPort(_ text: String, _ flag: String) -> (String, UInt16) {
            guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { fail("\(flag) \(text): not IP:PORT") }
            return (String(text[..<colon]), port)
        }
        while let flag = rest.popFirst() {
            switch flag {
            case "--role":
                let role = value(flag)
                guard role == "controlling" || role == "controlled" else { fail("--role controlling|controlled") }
                options.controlling = role == "controlling"
            case "--dir": options.dir = value(flag)
            case "--stun":
                let (host, port) = hostPort(value(flag), flag)
                options.settings.stunServer = STUNServer(host: host, port: port)
            case "--turn":
                // IP:PORT:USER:PASSWORD
                let parts = value(flag).split(separator: ":", maxSplits: 3).map(String.init)
                guard parts.count == 4, let port = UInt16(parts[1]) else { fail("--turn IP:PORT:USER:PASSWORD") }
                options.settings.turn = TURNServer(host: parts[0], port: port, username: parts[2], password: parts[3])
            case "--local-address": options.settings.localAddresses.append(value(flag))
            case "--nomination":
                guard let n = ICESettings.Nomination(rawValue: value(flag)) else { fail("--nomination regular|aggressive") }
                options.settings.nomination = n
            case "--stun-retransmissions": options.settings.stunMaxRetransmissions = UInt32(value(flag)) ?? options.settings.stunMaxRetransmissions
            case "--idle-timeout": options.settings.idleTimeoutMs = UInt32(value(flag)) ?? options.settings.idleTimeoutMs
            case "--no-consent": options.settings.consentFreshness = false
            case "--timeout": options.timeout = Double(value(flag)) ?? options.timeout
            case "--pings": options.pings = Int(value(flag)) ?? options.pings
            case "--hold": options.hold = Double(value(flag)) ?? options.hold
            case "-h", "--help":
                print("""
                    usage: ice-probe --role controlling|controlled --dir DIR [--stun IP:PORT] [--turn IP:PORT:USER:PASS]
                                     [--local-address IP]... [--nomination regular|aggressive] [--stun-retransmissions N]
                                     [--idle-timeout MS] [--no-consent] [--timeout S] [--pings N] [--hold S]
                    """)
                exit(0)
            default: fail("unknown argument \(flag)")
            }
        }
        guard !options.dir.isEmpty else { fail("--dir is required") }
        return options
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("ice-probe: \(message)\n".utf8))
    exit(2)
}

/// What the agent reported, from the ICE thread, read by the main thread.
final class Probe: @unchecked Sendable {
    let started = Date()
    private let lock = NSLock()
    private var outbox: [String] = []
    private(set) var pairs: [(ms: Double, local: CandidateInfo, remote: CandidateInfo)] = []
    private(set) var localCandidates: [String] = []
    private(set) var gatheredMs: Double?
    private(set) var failedMs: Double?
    private(set) var states: [String] = []
    private var sentAt: [UInt32: Date] = [:]
    private(set) var rtts: [Double] = []
    private(set) var echoed = 0
    private var unsentEchoes: [[UInt8]] = []

    var ms: Double { Date().timeIntervalSince(started) * 1000 }

    func with<T>(_ body: (Probe) -> T) -> T { lock.withLock { body(self) } }

    func handle(_ event: ICEEvent, agent: ICEAgent?, controlling: Bool) {
        lock.withLock {
            switch event {
            case .localCandidate(let sdp):
                outbox.append("cand " + sdp)
                localCandidates.append(sdp)
            case .gatheringDone:
                outbox.append("done")
                gatheredMs = ms
            case .selectedPair(let local, let remote):
                pairs.append((ms, local, remote))
                // Echo requests that came before this side had a pair of its own (the controlling side selects first).
                for echo in unsentEchoes { agent?.send(echo) }
                unsentEchoes.removeAll()
            case .stateChanged(let state):
                states.append(state.rawValue)
            case .failed:
                failedMs = failedMs ?? ms
            case .received(let bytes):
                guard bytes.count == 5, let seq = Self.sequence(bytes) else { return }
                if !controlling && bytes[0] == 0x50 {
                    echoed += 1
                    let echo = [0x45] + bytes.dropFirst()
                    if agent?.send(echo) != true { unsentEchoes.append(echo) }
                } else if controlling && bytes[0] == 0x45, let sent = sentAt.removeValue(forKey: seq) {
                    rtts.append(Date().timeIntervalSince(sent) * 1000)
                }
            }
        }
    }

    static func sequence(_ bytes: [UInt8]) -> UInt32? {
        bytes.dropFirst().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    func takeOutbox() -> [String] { lock.withLock { defer { outbox.removeAll() }; return outbox } }

    func ping(_ seq: UInt32, on agent: ICEAgent) {
        let bytes: [UInt8] = [0x50, UInt8(seq >> 24), UInt8(truncatingIfNeeded: seq >> 16), UInt8(truncatingIfNeeded: seq >> 8), UInt8(truncatingIfNeeded: seq)]
        lock.withLock { sentAt[seq] = Date() }
        agent.send(bytes)
    }
}

/// A signalling file: lines appended by one side, read as they complete by the other.
struct SignalFile {
    let path: String
    private var offset = 0
    private var partial = ""

    init(_ path: String) { self.path = path }

    static func append(_ lines: [String], to path: String) {
        guard !lines.isEmpty else { return }
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        guard let handle = FileHandle(forWritingAtPath: path) else { fail("cannot write \(path)") }
        handle.seekToEndOfFile()
        handle.write(Data(lines.map { $0 + "\n" }.joined().utf8))
        try? handle.close()
    }

    mutating func newLines() -> [String] {
        guard let handle = FileHandle(forReadingAtPath: path) else { return [] }
        defer { try? handle.close() }
        handle.seek(toFileOffset: UInt64(offset))
        let data = handle.readDataToEndOfFile()
        offset += data.count
        partial += String(decoding: data, as: UTF8.self)
        var lines = partial.components(separatedBy: "\n")
        partial = lines.removeLast()
        return lines
    }
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

func median(_ values: [Double]) -> Double? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func candidateJSON(_ c: CandidateInfo) -> [String: Any] { ["type": c.kind.rawValue, "address": c.address, "port": Int(c.port)] }

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
let role = options.controlling ? "controlling" : "controlled"
let peerRole = options.controlling ? "controlled" : "controlling"
let ownFile = options.dir + "/\(role).sig"
var peerFile = SignalFile(options.dir + "/\(peerRole).sig")
let probe = Probe()
let agentBox = AgentBox()

final class AgentBox: @unchecked Sendable {
    private let lock = NSLock()
    private var agent: ICEAgent?
    var value: ICEAgent? {
        get { lock.withLock { agent } }
        set { lock.withLock { agent = newValue } }
    }
}

let controlling = options.controlling
let agent: ICEAgent
do {
    agent = try ICEAgent(controlling: controlling, settings: options.settings) { event in
        probe.handle(event, agent: agentBox.value, controlling: controlling)
    }
} catch {
    fail("cannot create the agent: \(error)")
}
agentBox.value = agent
let credentials = agent.localCredentials()
SignalFile.append(["creds \(credentials.ufrag) \(credentials.password)"], to: ownFile)
agent.start()

let deadline = probe.started.addingTimeInterval(options.timeout)
var peerDone = false
var peerBye = false
var pingsSent = 0
var nextPing = Date()
var holdStart: (at: Date, cpu: Double)?
var holdCPU: Double?
var finished = false
while Date() < deadline && !finished {
    SignalFile.append(probe.takeOutbox(), to: ownFile)
    for line in peerFile.newLines() {
        let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
        switch parts.first {
        case "creds" where parts.count == 3: agent.setRemote(ufrag: parts[1], password: parts[2])
        case "cand": agent.addRemoteCandidate(String(line.dropFirst(5)))
        case "done":
            agent.remoteGatheringDone()
            peerDone = true
        case "bye": peerBye = true
        default: break
        }
    }
    let (selected, failed) = probe.with { ($0.pairs.last != nil, $0.failedMs != nil) }
    if failed && !selected { break }
    if selected {
        if controlling && pingsSent < options.pings {
            if Date() >= nextPing {
                probe.ping(UInt32(pingsSent), on: agent)
                pingsSent += 1
                nextPing = Date().addingTimeInterval(0.02)
            }
        } else if holdStart == nil {
            // The last echo has 500 ms to come back before the hold starts. The hold is one sleep of this thread,
            // so the CPU measured over it is the ICE thread's alone (keepalives, consent checks).
            if controlling { usleep(500_000) }
            holdStart = (Date(), cpuSeconds())
            usleep(UInt32(max(0, min(options.hold, deadline.timeIntervalSinceNow - 0.5)) * 1_000_000))
        } else if let start = holdStart, holdCPU == nil {
            holdCPU = (cpuSeconds() - start.cpu) / max(Date().timeIntervalSince(start.at), 0.001)
            if controlling {
                SignalFile.append(["bye"], to: ownFile)
                finished = true
            }
        }
    }
    // The controlled side stays until the controlling one is done with the path.
    if peerBye && !controlling && holdCPU != nil { finished = true }
    usleep(5_000)
}
SignalFile.append(probe.takeOutbox(), to: ownFile)
agent.close()

let report: [String: Any] = probe.with { p in
    var r: [String: Any] = [
        "role": role,
        "localCandidateTypes": p.localCandidates.compactMap { $0.components(separatedBy: " typ ").last?.split(separator: " ").first.map(String.init) },
        "states": p.states,
        "peerGatheringDone": peerDone,
        "selectedPairs": p.pairs.map { ["ms": $0.ms, "local": candidateJSON($0.local), "remote": candidateJSON($0.remote)] },
    ]
    if let gathered = p.gatheredMs { r["msToGatheringDone"] = gathered }
    if let first = p.pairs.first { r["msToSelectedPair"] = first.ms }
    if let last = p.pairs.last {
        r["selected"] = ["local": candidateJSON(last.local), "remote": candidateJSON(last.remote),
                         "relayed": last.local.kind == .relay || last.remote.kind == .relay]
    }
    if let failed = p.failedMs { r["msToFailed"] = failed }
    if controlling {
        var echo: [String: Any] = ["sent": pingsSent, "received": p.rtts.count]
        if let m = median(p.rtts) { echo["rttMs"] = ["min": p.rtts.min()!, "median": m, "max": p.rtts.max()!] }
        r["echo"] = echo
    } else {
        r["echoed"] = p.echoed
    }
    if let cpu = holdCPU { r["holdCpuPercent"] = cpu * 100 }
    r["ok"] = !p.pairs.isEmpty && (!controlling || !p.rtts.isEmpty || options.pings == 0)
    return r
}
let data = (try? JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])) ?? Data("{}".utf8)
print(String(decoding: data, as: UTF8.self))
exit(report["ok"] as? Bool == true ? 0 : 1)
