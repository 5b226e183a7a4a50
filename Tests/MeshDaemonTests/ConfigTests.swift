import Foundation
@testable import MeshDaemon
import MeshIdentity
import Testing

@Suite struct ConfigTests {
    private func withFile(_ text: String, _ body: (String) throws -> Void) rethrows {
        let path = NSTemporaryDirectory() + "mesh-config-\(UUID().uuidString).toml"
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        try body(path)
    }

    @Test func parsesEveryKey() throws {
        let pinned = PrivateKey().address
        try withFile("""
            listen = "127.0.0.1:5000"
            key = "node.key"
            wallets = ["/keys/a.key", "b.key"]
            data_dir = "/var/lib/mesh"
            control_socket = "/run/mesh.sock"
            peers = ["\(pinned.checksummed)@10.0.0.1:4460", "[::1]:4461", "example.org:4462"]
            auto_answer = "record"
            record_dir = "rec"
            bitrate = 32000
            vad = true
            denoise = true
            redundancy = "off"
            socket_buffer = 8388608
            hop_limit = 4
            max_sessions = 50
            max_sessions_per_neighbour = 5
            setups_per_second = 400
            trunking = "off"
            trunk_hold_ms = 5
            direct_paths = true
            relay_only = true
            allow_links = ["\(pinned.checksummed)"]
            metrics = "127.0.0.1:9100"
            """) { path in
            let c = try NodeConfig.load(file: path)
            let base = URL(fileURLWithPath: path).deletingLastPathComponent().path
            #expect(c.listen == HostPort(host: "127.0.0.1", port: 5000))
            #expect(c.keyFile == base + "/node.key")
            #expect(c.walletFiles == ["/keys/a.key", base + "/b.key"])
            #expect(c.dataDir == "/var/lib/mesh")
            #expect(c.resolvedControlSocket == "/run/mesh.sock")
            #expect(c.peers.map(\.pinned) == [pinned, nil, nil])
            #expect(c.peers.map(\.endpoint) == [HostPort(host: "10.0.0.1", port: 4460), HostPort(host: "::1", port: 4461),
                                                HostPort(host: "example.org", port: 4462)])
            #expect(c.autoAnswer == .record)
            #expect(c.resolvedRecordDir == base + "/rec")
            #expect(c.bitrate == 32_000)
            #expect(c.vad && c.denoise && c.redundancy == .off)
            #expect(c.socketBuffer == 8 << 20)
            #expect(c.relayConfig.hopLimit == 4 && c.gossipConfig.nodeRadius == 4)
            #expect(c.relayConfig.maxSessions == 50 && c.relayConfig.maxSessionsPerNeighbour == 5)
            #expect(c.relayConfig.setupsPerSecond == 400 && c.relayConfig.setupBurst == 800)
            #expect(!c.trunking && c.trunkHoldMs == 5)
            #expect(c.directPaths && !NodeConfig().directPaths)
            #expect(c.relayOnly && !NodeConfig().relayOnly)
            #expect(c.linkConfig.allowedPeers == [pinned])
            #expect(c.metrics == HostPort(host: "127.0.0.1", port: 9100))
        }
    }

    @Test(arguments: [
        ("lisen = \"x\"", "unknown key \"lisen\""),
        ("listen = 5", "listen must be a string"),
        ("listen = \"nohost\"", "expected HOST:PORT"),
        ("listen = \"1.2.3.4:70000\"", "port must be 0–65535"),
        ("metrics = \"9100\"", "metrics: expected HOST:PORT"),
        ("auto_answer = \"sometimes\"", "auto_answer: expected off, record or echo"),
        ("peers = \"1.2.3.4:5\"", "peers must be an array of strings"),
        ("peers = [\"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD@1.2.3.4:5\"]", "wrong EIP-55 checksum"),
        ("bitrate = 1", "bitrate: must be 6000–128000"),
        ("vad = \"yes\"", "vad must be true or false"),
        ("redundancy = \"sometimes\"", "redundancy: expected auto, on or off"),
        ("socket_buffer = 1024", "socket_buffer: must be 65536–1073741824 bytes"),
        ("hop_limit = 0", "hop_limit: must be 1–15, got 0"),
        ("hop_limit = \"6\"", "hop_limit must be an integer"),
        ("max_sessions = -1", "max_sessions: must be 0–1000000"),
        ("max_sessions_per_neighbour = 2000000", "max_sessions_per_neighbour: must be 0–1000000"),
        ("allow_links = [\"0x12\"]", "allow_links:"),
        ("setups_per_second = 0", "setups_per_second: must be 1–100000"),
        ("trunking = \"maybe\"", "trunking: expected on or off, got \"maybe\""),
        ("trunking = 1", "trunking must be on, off, true or false"),
        ("trunk_hold_ms = 50", "trunk_hold_ms: must be 0–20"),
        ("listen = [", "line 1"),
        // What toml++ asserts on instead of reporting (found by the `config` fuzz target), and what it reports.
        ("[/bootstrap]", "line 1: a table header must begin with a key"),
        ("listen = \"a:1\"\n  [ \nnodes = []", "line 2: a table header must begin with a key"),
        ("[[ {x = 1}]]", "line 1: a table header must begin with a key"),
        ("[bootstrap]\nnodes = [\n    # \"a:1\",\n}", "line 4: '}' where an array expects a value"),
        ("peers = [\"a:1\", \"}\", # }\n  }", "line 2: '}' where an array expects a value"),
        ("peers = [\n  [\n  ]\n]", "peers must be an array of strings"),
        ("peers = [\"[/x]\", { a = \"}\" }]", "peers must be an array of strings"),
    ])
    func reportsBadValuesInOneLine(text: String, expected: String) throws {
        withFile(text) { path in
            do {
                _ = try NodeConfig.load(file: path)
                Issue.record("expected an error for \(text)")
            } catch {
                let message = "\(error)"
                #expect(message.contains(expected), "\(message)")
                #expect(message.hasPrefix("config \(path)"))
                #expect(!message.contains("\n"))
            }
        }
    }

    @Test func bootstrapAsArrayOrTable() throws {
        try withFile("bootstrap = [\"127.0.0.1:1\"]\nadvertise = [\"192.0.2.1:4460\"]") { path in
            let c = try NodeConfig.load(file: path)
            #expect(c.bootstrap.map(\.endpoint) == [HostPort(host: "127.0.0.1", port: 1)])
            #expect(c.advertise == [HostPort(host: "192.0.2.1", port: 4460)])
        }
        try withFile("[bootstrap]\nnodes = [\"127.0.0.1:1\", \"[::1]:2\"]") { path in
            let c = try NodeConfig.load(file: path)
            #expect(c.bootstrap.count == 2)
        }
        try withFile("[bootstrap]\nnode = [\"127.0.0.1:1\"]") { path in
            #expect(throws: ConfigError.self) { try NodeConfig.load(file: path) }
        }
    }

    @Test func theShippedExampleConfigLoads() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Configs/node.toml").path
        let c = try NodeConfig.load(file: example)
        #expect(c.autoAnswer == .echo)
        #expect(c.listen == HostPort(host: "0.0.0.0", port: 4460))
    }

    @Test func missingFileIsReported() {
        #expect(throws: ConfigError.self) { try NodeConfig.load(file: "/nonexistent/node.toml") }
    }

    @Test func nonUTF8ConfigNamesTheFileAndTheLine() throws {
        let path = NSTemporaryDirectory() + "mesh-config-\(UUID().uuidString).toml"
        _ = FileManager.default.createFile(atPath: path, contents: Data("listen = \"127.0.0.1:1\"\nname = \"".utf8) + [0xFF, 0x22, 0x0A])
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: ConfigError("config \(path): line 2 is not UTF-8 text (TOML files are UTF-8)")) {
            try NodeConfig.load(file: path)
        }
    }

    @Test func hostPortForms() throws {
        #expect(try HostPort(parsing: "[::]:0", what: "x") == HostPort(host: "::", port: 0))
        #expect(try HostPort(parsing: "[::]:0", what: "x").description == "[::]:0")
        #expect(throws: ConfigError.self) { try HostPort(parsing: "::1:5", what: "x") }
        #expect(throws: ConfigError.self) { try HostPort(parsing: ":5", what: "x") }
        #expect(throws: ConfigError.self) { try HostPort(parsing: "host:", what: "x") }
    }

    @Test func nodeKeyIsCreatedOnceInTheDataDir() throws {
        var c = NodeConfig()
        c.dataDir = NSTemporaryDirectory() + "mesh-data-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: c.dataDir) }
        let first = try NodeKeys.load(config: c)
        let second = try NodeKeys.load(config: c)
        #expect(first.node.address == second.node.address)
        #expect(first.wallets.map(\.address) == [first.node.address])
        let mode = try FileManager.default.attributesOfItem(atPath: c.dataDir + "/node.key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        c.keyFile = c.dataDir + "/missing.key"
        #expect(throws: ConfigError.self) { try NodeKeys.load(config: c) }
    }

    @Test func aBadWalletCreatesNoNodeKey() throws {
        var c = NodeConfig()
        c.dataDir = NSTemporaryDirectory() + "mesh-data-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: c.dataDir) }
        c.walletFiles = [c.dataDir + "-missing-wallet.key"]
        #expect(throws: ConfigError.self) { try NodeKeys.load(config: c) }
        #expect(!FileManager.default.fileExists(atPath: c.dataDir + "/node.key"))
    }
}

@Suite struct PCMTests {
    @Test func pcmBase64RoundTrip() {
        let samples: [Int16] = [0, 1, -1, .max, .min, 12345]
        #expect(PCM.samples(base64: PCM.base64(samples)) == samples)
        #expect(PCM.samples(base64: "not base64!") == nil)
    }
}
