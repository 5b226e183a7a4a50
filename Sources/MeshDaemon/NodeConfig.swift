import Foundation
import MeshIdentity
import MeshLink
import MeshMedia
import MeshRouting
import TOMLKit

/// A configuration problem, reported as one line naming the key or flag.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// `HOST:PORT`, `[IPv6]:PORT`.
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String, what: String) throws(ConfigError) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ConfigError("\(what): expected [IPV6]:PORT, got \"\(text)\"")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw ConfigError("\(what): expected HOST:PORT, got \"\(text)\"")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { throw ConfigError("\(what): missing host in \"\(text)\"") }
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw ConfigError("\(what): port must be 0–65535, got \"\(portText)\"")
        }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// `[0xNODEADDR@]HOST:PORT`: a neighbour to keep a link with, optionally pinned to its node key.
public struct PeerSpec: Sendable, Equatable, CustomStringConvertible {
    public var pinned: WalletAddress?
    public var endpoint: HostPort

    public init(parsing text: String, what: String) throws(ConfigError) {
        if let at = text.firstIndex(of: "@") {
            do {
                pinned = try WalletAddress(parsing: String(text[..<at]))
            } catch {
                throw ConfigError("\(what): \(error)")
            }
            endpoint = try HostPort(parsing: String(text[text.index(after: at)...]), what: what)
        } else {
            pinned = nil
            endpoint = try HostPort(parsing: text, what: what)
        }
    }

    public var description: String { (pinned.map { "\($0)@" } ?? "") + endpoint.description }
}

/// What a node does with an incoming call.
public enum AutoAnswer: String, Sendable, CaseIterable {
    /// Decline every call.
    case off
    /// Answer and write the caller's audio to one WAV per call in the record directory.
    case record
    /// Answer and send back what arrives (a sound-test service).
    case echo
}

/// Everything `mesh-node run` needs; built from the TOML file, then overridden by flags.
public struct NodeConfig: Sendable {
    public var listen = HostPort(host: "0.0.0.0", port: 4460)
    public var keyFile: String?
    public var walletFiles: [String] = []
    public var passphraseFile: String?
    public var dataDir: String = NodeConfig.defaultDataDir
    public var controlSocket: String?
    public var peers: [PeerSpec] = []
    /// DHT nodes to join through (`[0xNODEADDR@]HOST:PORT`).
    public var bootstrap: [PeerSpec] = []
    /// Endpoints to publish in presence records; default: the listen address when it is a specific address.
    public var advertise: [HostPort] = []
    public var autoAnswer: AutoAnswer = .off
    public var recordDir: String?
    public var bitrate = 24_000
    /// The sender's speexdsp VAD drives DTX (docs/media.md); off: Opus's own DTX.
    public var vad = false
    /// speexdsp noise suppression on the audio this node sends.
    public var denoise = false
    /// Redundant copies against burst loss: auto (while the peer reports it), on, off.
    public var redundancy: RedundancyMode = .auto
    /// Bytes of UDP socket buffer asked for each way (docs/links.md, "The socket").
    public var socketBuffer = 4 << 20
    /// Links a relay chain may have at most (docs/routing.md); also how far nodes announce themselves in gossip.
    public var hopLimit = 6
    /// Sessions this node relays at once, and per neighbour that asks (docs/forwarding.md).
    public var maxSessions = 10_000
    public var maxSessionsPerNeighbour = 1_000
    /// Chain set-ups one neighbour may ask for per second (a token bucket with twice this as its burst).
    public var setupsPerSecond = 50
    /// Whether packets of many sessions to one neighbour share datagrams (trunks with mini-frames;
    /// docs/forwarding.md, "Trunks and mini-frames"). Receiving trunks works either way.
    public var trunking = true
    /// Longest time a lone packet waits in a trunk for company, in ms (0: never waits).
    public var trunkHoldMs = 2
    /// Whether this node's answered calls try a direct path with ICE (docs/calls.md, "Direct paths"). Off by
    /// default until the fallback has been measured reliable on more than the NAT lab (docs/configuration.md).
    public var directPaths = false
    /// Whether calls step down and up together on the judgement of their relays and ends (docs/calls.md, "Quality"):
    /// off, this node's calls keep their profile and, as a relay, it sends no verdicts.
    public var qualitySwitching = true
    /// A wallet that must not reveal where it lives: no direct paths for its calls, whatever `directPaths` says (ICE
    /// candidates carry home addresses), and no endpoints in its presence records, only the relays it links to.
    public var relayOnly = false
    /// When not empty, links form only with these node addresses (a private mesh; docs/links.md).
    public var allowLinks: [WalletAddress] = []
    /// Where to serve `GET /metrics` in the Prometheus text format (docs/metrics.md); nil: no endpoint.
    public var metrics: HostPort?
    /// A TURN server (coturn) direct-path attempts also gather relayed candidates from, for networks where no other
    /// pair works (two symmetric NATs), with its long-term credentials: the user name and a file holding the
    /// password (docs/calls.md, "Direct paths").
    public var turn: HostPort?
    public var turnUser: String?
    public var turnPasswordFile: String?

    public init() {}

    public var relayConfig: RelayConfig {
        var c = RelayConfig()
        c.hopLimit = hopLimit
        c.maxSessions = maxSessions
        c.maxSessionsPerNeighbour = maxSessionsPerNeighbour
        c.setupsPerSecond = Double(setupsPerSecond)
        c.setupBurst = Double(2 * setupsPerSecond)
        c.judges = qualitySwitching
        return c
    }

    public var gossipConfig: GossipConfig {
        var c = GossipConfig()
        c.nodeRadius = UInt8(hopLimit)
        return c
    }

    public static var defaultDataDir: String {
        (ProcessInfo.processInfo.environment["HOME"] ?? "/root") + "/.mesh"
    }

    public var resolvedControlSocket: String { controlSocket ?? dataDir + "/control.sock" }
    public var resolvedRecordDir: String { recordDir ?? dataDir + "/recordings" }

    static let knownKeys: Set<String> = [
        "listen", "key", "wallets", "passphrase_file", "data_dir", "control_socket", "peers", "bootstrap", "advertise",
        "auto_answer", "record_dir", "bitrate", "vad", "denoise", "redundancy", "socket_buffer", "hop_limit", "max_sessions",
        "max_sessions_per_neighbour", "allow_links", "metrics", "setups_per_second", "trunking", "trunk_hold_ms", "direct_paths", "quality_switching", "relay_only",
        "turn", "turn_user", "turn_password_file",
    ]

    /// Reads a TOML file (format in docs/configuration.md). Relative paths in it are relative to the file.
    public static func load(file: String) throws(ConfigError) -> NodeConfig {
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        } catch {
            throw ConfigError("config \(file): cannot read (\((error as NSError).localizedDescription))")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            let bad = (lines.firstIndex { String(validating: $0, as: UTF8.self) == nil } ?? 0) + 1
            throw ConfigError("config \(file): line \(bad) is not UTF-8 text (TOML files are UTF-8)")
        }
        if let (line, problem) = tomlAssertionTrap(text) {
            throw ConfigError("config \(file): line \(line): \(problem)")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError("config \(file): line \(error.source.begin.line): \(error.description)")
        } catch {
            throw ConfigError("config \(file): not valid TOML")
        }
        let base = URL(fileURLWithPath: file).deletingLastPathComponent().path
        func path(_ value: String) -> String { value.hasPrefix("/") ? value : base + "/" + value }
        func string(_ key: String) throws(ConfigError) -> String? {
            guard let value = table[key] else { return nil }
            guard let s = value.string else { throw ConfigError("config \(file): \(key) must be a string") }
            return s
        }
        func strings(_ value: TOMLValueConvertible?, _ key: String) throws(ConfigError) -> [String] {
            guard let value else { return [] }
            guard let array = value.array, let items = Optional(array.compactMap { $0.string }), items.count == array.count else {
                throw ConfigError("config \(file): \(key) must be an array of strings")
            }
            return items
        }
        func strings(_ key: String) throws(ConfigError) -> [String] { try strings(table[key], key) }
        if let unknown = table.keys.first(where: { !knownKeys.contains($0) }) {
            throw ConfigError("config \(file): unknown key \"\(unknown)\" (known: \(knownKeys.sorted().joined(separator: ", ")))")
        }
        var config = NodeConfig()
        if let v = try string("listen") { config.listen = try HostPort(parsing: v, what: "config \(file): listen") }
        config.keyFile = try string("key").map(path)
        config.walletFiles = try strings("wallets").map(path)
        config.passphraseFile = try string("passphrase_file").map(path)
        if let v = try string("data_dir") { config.dataDir = path(v) }
        config.controlSocket = try string("control_socket").map(path)
        config.peers = try strings("peers").map { (s) throws(ConfigError) in try PeerSpec(parsing: s, what: "config \(file): peers") }
        // Either `bootstrap = ["…"]` or a `[bootstrap]` table with `nodes = ["…"]`.
        let bootstrap: [String]
        if let section = table["bootstrap"]?.table {
            if let unknown = section.keys.first(where: { $0 != "nodes" }) {
                throw ConfigError("config \(file): unknown key \"bootstrap.\(unknown)\" (known: bootstrap.nodes)")
            }
            bootstrap = try strings(section["nodes"], "bootstrap.nodes")
        } else {
            bootstrap = try strings("bootstrap")
        }
        config.bootstrap = try bootstrap.map { (s) throws(ConfigError) in try PeerSpec(parsing: s, what: "config \(file): bootstrap") }
        config.advertise = try strings("advertise").map { (s) throws(ConfigError) in try HostPort(parsing: s, what: "config \(file): advertise") }
        if let v = try string("auto_answer") { config.autoAnswer = try parseAutoAnswer(v, what: "config \(file): auto_answer") }
        config.recordDir = try string("record_dir").map(path)
        if let value = table["bitrate"] {
            guard let b = value.int else { throw ConfigError("config \(file): bitrate must be an integer") }
            config.bitrate = try checkBitrate(b, what: "config \(file): bitrate")
        }
        for (key, setting) in [("vad", \NodeConfig.vad), ("denoise", \NodeConfig.denoise), ("relay_only", \NodeConfig.relayOnly)] {
            guard let value = table[key] else { continue }
            guard let flag = value.bool else { throw ConfigError("config \(file): \(key) must be true or false") }
            config[keyPath: setting] = flag
        }
        for (key, setting) in [("direct_paths", \NodeConfig.directPaths), ("trunking", \NodeConfig.trunking),
                               ("quality_switching", \NodeConfig.qualitySwitching)] {
            guard let value = table[key] else { continue }
            if let flag = value.bool {
                config[keyPath: setting] = flag
            } else if let text = value.string {
                config[keyPath: setting] = try parseSwitch(text, what: "config \(file): \(key)")
            } else {
                throw ConfigError("config \(file): \(key) must be on, off, true or false")
            }
        }
        if let v = try string("redundancy") { config.redundancy = try parseRedundancy(v, what: "config \(file): redundancy") }
        if let value = table["socket_buffer"] {
            guard let b = value.int else { throw ConfigError("config \(file): socket_buffer must be an integer") }
            config.socketBuffer = try checkSocketBuffer(b, what: "config \(file): socket_buffer")
        }
        config.metrics = try string("metrics").map { (s) throws(ConfigError) in try HostPort(parsing: s, what: "config \(file): metrics") }
        config.turn = try string("turn").map { (s) throws(ConfigError) in try HostPort(parsing: s, what: "config \(file): turn") }
        config.turnUser = try string("turn_user")
        config.turnPasswordFile = try string("turn_password_file").map(path)
        config.allowLinks = try strings("allow_links").map { (s) throws(ConfigError) in try parseNode(s, what: "config \(file): allow_links") }
        for (key, setting, range) in [("hop_limit", \NodeConfig.hopLimit, hopLimits), ("max_sessions", \NodeConfig.maxSessions, sessionLimits),
                                      ("max_sessions_per_neighbour", \NodeConfig.maxSessionsPerNeighbour, sessionLimits),
                                      ("setups_per_second", \NodeConfig.setupsPerSecond, setupRates),
                                      ("trunk_hold_ms", \NodeConfig.trunkHoldMs, trunkHolds)] {
            guard let value = table[key] else { continue }
            guard let n = value.int else { throw ConfigError("config \(file): \(key) must be an integer") }
            config[keyPath: setting] = try checkRange(n, range, what: "config \(file): \(key)")
        }
        return config
    }

    /// The first place where the toml++ inside TOMLKit asserts instead of reporting an error (an abort in a debug
    /// build, undefined behaviour in a release build): a table header that does not begin with a key (`[/x]`, a
    /// lone `[`), or a `}` where an array expects a value. Found by the `config` fuzz target (docs/fuzzing.md).
    /// Skips strings and comments and tracks open arrays and inline tables; anything else is left to toml++.
    static func tomlAssertionTrap(_ text: String) -> (line: Int, problem: String)? {
        let chars = Array(text.unicodeScalars)
        var line = 1, i = 0, lineStart = true
        var open: [Unicode.Scalar] = []
        func at(_ token: String) -> Bool { chars[i...].starts(with: token.unicodeScalars) }
        while i < chars.count {
            let c = chars[i]
            switch c {
            case "\n":
                line += 1
                lineStart = true
                i += 1
                continue
            case " ", "\t", "\r":
                i += 1
                continue
            case "#":
                while i < chars.count, chars[i] != "\n" { i += 1 }
                continue
            case "\"", "'":
                let close = String(repeating: String(c), count: at(String(repeating: String(c), count: 3)) ? 3 : 1)
                i += close.count
                while i < chars.count, !at(close), close.count == 3 || chars[i] != "\n" {
                    if c == "\"", chars[i] == "\\" { i += 1 }
                    if i < chars.count, chars[i] == "\n" { line += 1 }
                    i += 1
                }
                i += close.count
                lineStart = false
                continue
            case "[":
                if open.isEmpty, lineStart {
                    let key = chars[(i + (at("[[") ? 2 : 1))...].drop { $0 == " " || $0 == "\t" }
                    guard let first = key.first, first.isASCII,
                          first.properties.isAlphabetic || ("0"..."9").contains(first) || "_-\"']".unicodeScalars.contains(first)
                    else { return (line, "a table header must begin with a key") }
                }
                open.append(c)
            case "{":
                open.append(c)
            case "]":
                if open.last == "[" { open.removeLast() }
            case "}":
                if open.last == "[" { return (line, "'}' where an array expects a value") }
                if open.last == "{" { open.removeLast() }
            default:
                break
            }
            lineStart = false
            i += 1
        }
        return nil
    }

    public static func parseAutoAnswer(_ text: String, what: String) throws(ConfigError) -> AutoAnswer {
        guard let mode = AutoAnswer(rawValue: text) else {
            throw ConfigError("\(what): expected off, record or echo, got \"\(text)\"")
        }
        return mode
    }

    public static func parseRedundancy(_ text: String, what: String) throws(ConfigError) -> RedundancyMode {
        guard let mode = RedundancyMode(rawValue: text) else {
            throw ConfigError("\(what): expected auto, on or off, got \"\(text)\"")
        }
        return mode
    }

    public static func checkSocketBuffer(_ value: Int, what: String) throws(ConfigError) -> Int {
        guard (65_536...(1 << 30)).contains(value) else { throw ConfigError("\(what): must be 65536–1073741824 bytes, got \(value)") }
        return value
    }

    public static func parseNode(_ text: String, what: String) throws(ConfigError) -> WalletAddress {
        do { return try WalletAddress(parsing: text) } catch { throw ConfigError("\(what): \(error)") }
    }

    public var linkConfig: LinkConfig {
        var c = LinkConfig()
        if !allowLinks.isEmpty { c.allowedPeers = Set(allowLinks) }
        return c
    }

    /// Hop limits a chain may have (a set-up carries at most 16 nodes).
    public static let hopLimits = 1...15
    public static let sessionLimits = 0...1_000_000
    public static let setupRates = 1...100_000
    public static let trunkHolds = 0...20

    /// `on` or `off`.
    public static func parseSwitch(_ text: String, what: String) throws(ConfigError) -> Bool {
        switch text {
        case "on": return true
        case "off": return false
        default: throw ConfigError("\(what): expected on or off, got \"\(text)\"")
        }
    }

    public static func checkRange(_ value: Int, _ range: ClosedRange<Int>, what: String) throws(ConfigError) -> Int {
        guard range.contains(value) else {
            throw ConfigError("\(what): must be \(range.lowerBound)–\(range.upperBound), got \(value)")
        }
        return value
    }

    public static func checkBitrate(_ value: Int, what: String) throws(ConfigError) -> Int {
        guard (6_000...128_000).contains(value) else { throw ConfigError("\(what): must be 6000–128000 bit/s, got \(value)") }
        return value
    }
}
