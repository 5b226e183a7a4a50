import Foundation
import MeshControl
import Testing

/// What a user sees from the command-line tools: one-line errors, exit codes, key files.
@Suite struct CLITests {
    @Test func identityCommands() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let key = scratch.file("w.key")
        let created = try runCommand(Binaries.meshNode, ["identity", "new", "--out", key])
        #expect(created.status == 0)
        let again = try runCommand(Binaries.meshNode, ["identity", "new", "--out", key])
        #expect(again.status != 0)
        #expect(again.stderr.split(separator: "\n").count == 1)
        let mode = try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int
        #expect(mode == 0o600)

        let imported = scratch.file("i.key")
        #expect(try runCommand(Binaries.meshNode, ["identity", "import", "--private-key-hex",
                                                   "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318", "--out", imported]).status == 0)
        let show = try decodeJSON(try runCommand(Binaries.meshNode, ["identity", "show", "--key", imported, "--json"]).stdout)
        #expect(show["address"]?.stringValue == "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23")
        let signed = try runCommand(Binaries.meshNode, ["identity", "sign", "--key", imported, "--message", "Some data"])
        #expect(signed.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ==
            "0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c")
        let signature = signed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let valid = try runCommand(Binaries.meshNode, ["identity", "verify", "--address", "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
                                                       "--message", "Some data", "--signature", signature])
        #expect(valid.status == 0)
        let invalid = try runCommand(Binaries.meshNode, ["identity", "verify", "--address", "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
                                                         "--message", "Other data", "--signature", signature])
        #expect(invalid.status == 1)
        let badChecksum = try runCommand(Binaries.meshNode, ["identity", "verify", "--address", "0x2c7536E3605D9C16a7a3D7b1898e529396a65C23",
                                                             "--message", "Some data", "--signature", signature])
        #expect(badChecksum.status != 0 && badChecksum.status != 1)
        #expect(badChecksum.stderr.contains("checksum"))
    }

    @Test(arguments: [
        (["run", "--listen", "nope"], "--listen"),
        (["run", "--listen", "127.0.0.1:70000"], "port must be"),
        (["run", "--auto-answer", "maybe"], "--auto-answer"),
        (["run", "--peer", "0xABCDEF@1.2.3.4:5"], "--peer"),
        (["run", "--hop-limit", "16"], "--hop-limit: must be 1–15, got 16"),
        (["run", "--max-sessions", "2000000"], "--max-sessions: must be 0–1000000, got 2000000"),
        (["run", "--trunking", "maybe"], "--trunking: expected on or off, got \"maybe\""),
        (["run", "--trunk-hold-ms", "21"], "--trunk-hold-ms: must be 0–20, got 21"),
        (["run", "--setups-per-second", "0"], "--setups-per-second: must be 1–100000, got 0"),
        (["run", "--allow-link", "0x12"], "--allow-link"),
        (["run", "--turn", "127.0.0.1:3478"], "turn 127.0.0.1:3478: needs turn_user and turn_password_file"),
        (["run", "--turn-user", "mesh"], "need a turn server (--turn)"),
        (["run", "--turn", "127.0.0.1:3478", "--turn-user", "mesh", "--turn-password-file", "/nonexistent"], "turn password file"),
        (["run", "--config", "/nonexistent.toml"], "config /nonexistent.toml"),
        (["run", "--key", "/nonexistent.key", "--listen", "127.0.0.1:0"], "/nonexistent.key"),
        (["call", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"], "checksum"),
        (["call", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "--control-socket", "/tmp/none.sock"], "cannot reach the node"),
        (["call", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "--duration", "-5"], "--duration must be a positive number"),
    ])
    func badArgumentsGetOneLineErrors(arguments: [String], expected: String) throws {
        let result = try runCommand(Binaries.meshNode, arguments, timeout: 20)
        #expect(result.status != 0)
        #expect(result.stderr.contains(expected), "stderr: \(result.stderr)")
        let lines = result.stderr.split(separator: "\n").filter { !$0.hasPrefix("Usage") && !$0.contains("--help") }
        #expect(lines.count == 1, "one line expected: \(result.stderr)")
    }

    @Test func nodeCtlNamesAnUnknownSubcommand() throws {
        let result = try runCommand(Binaries.nodeCtl, ["--control-socket", "/tmp/none.sock", "frob"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("unknown subcommand 'frob'"), "\(result.stderr)")
        #expect(!result.stderr.contains("--control-socket"), "\(result.stderr)")
    }

    @Test func badInputsOfRunAreOneLineAndCreateNothing() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let config = scratch.file("bad.toml")
        FileManager.default.createFile(atPath: config, contents: Data("listen = \"127.0.0.1:0\"\n# caf".utf8) + [0xE9, 0x0A])
        let nonUTF8 = try runCommand(Binaries.meshNode, ["run", "--config", config, "--data-dir", scratch.file("d1")], timeout: 20)
        #expect(nonUTF8.status != 0)
        #expect(nonUTF8.stderr.trimmingCharacters(in: .whitespacesAndNewlines) ==
            "Error: config \(config): line 2 is not UTF-8 text (TOML files are UTF-8)", "\(nonUTF8.stderr)")

        let data = scratch.file("d2")
        let badWallet = try runCommand(Binaries.meshNode, ["run", "--listen", "127.0.0.1:0", "--data-dir", data,
                                                           "--control-socket", scratch.file("d2.sock"),
                                                           "--wallet", scratch.file("missing.key")], timeout: 20)
        #expect(badWallet.status != 0 && badWallet.stderr.contains("missing.key"), "\(badWallet.stderr)")
        #expect(!FileManager.default.fileExists(atPath: data + "/node.key"))

        let badPeer = try runCommand(Binaries.meshNode, ["run", "--listen", "127.0.0.1:0", "--data-dir", data,
                                                         "--control-socket", scratch.file("d2.sock"), "--peer", "nohost.invalid:5"],
                                     timeout: 20)
        #expect(badPeer.status != 0)
        #expect(badPeer.stderr.trimmingCharacters(in: .whitespacesAndNewlines) ==
            "Error: peer nohost.invalid:5: cannot resolve host nohost.invalid", "\(badPeer.stderr)")
        #expect(!FileManager.default.fileExists(atPath: data))

        // A UDP port in use: the node binds it before it creates anything.
        let squatter = try RogueNode()
        let listen = "127.0.0.1:\(squatter.port)"
        let portInUse = try runCommand(Binaries.meshNode, ["run", "--listen", listen, "--data-dir", data,
                                                           "--control-socket", scratch.file("d2.sock")], timeout: 20)
        let lines = portInUse.stderr.split(separator: "\n")
        #expect(portInUse.status != 0 && lines.count == 1, "\(portInUse.stderr)")
        #expect(lines.first?.hasPrefix("Error: listen \(listen): cannot bind UDP (Address already in use)") == true, "\(portInUse.stderr)")
        #expect(!FileManager.default.fileExists(atPath: data))
    }

    @Test func nodeCtlWithoutANode() throws {
        let result = try runCommand(Binaries.nodeCtl, ["--control-socket", "/tmp/none.sock", "peers"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("cannot reach the node at /tmp/none.sock"))
    }

    @Test func controlSocketIsOwnerOnlyAndSpeaksJSONRPC() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let node = try NodeProcess("n", in: scratch, arguments: [])
        defer { node.stop() }
        let mode = try FileManager.default.attributesOfItem(atPath: node.socket)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let client = try ControlClient(path: node.socket)
        defer { client.close() }
        let info = try client.call("node.info")
        #expect(info["node"]?.stringValue == node.address)
        #expect(throws: RPCError.methodNotFound("no.such")) { try client.call("no.such") }
        #expect(throws: RPCError.self) { try client.call("call.hangup", .object(["call": .string("ffff")])) }
        let placing = try? client.call("call.place", .object(["to": .string(node.address)]))
        #expect(placing == nil)
        // A second node on the same socket is refused while the first lives.
        let second = try runCommand(Binaries.meshNode, ["run", "--listen", "127.0.0.1:0", "--data-dir", scratch.file("n2"),
                                                        "--control-socket", node.socket], timeout: 20)
        #expect(second.status != 0 && second.stderr.contains("in use"))
        #expect(!second.stderr.contains("UDP socket closed"), "\(second.stderr)")
        // What the node keeps is its owner's alone.
        let data = scratch.file("n")
        #expect(try FileManager.default.attributesOfItem(atPath: data)[.posixPermissions] as? Int == 0o700)
        for file in ["node.db", "node.db-wal", "node.db-shm", "node.key"] {
            let fileMode = try FileManager.default.attributesOfItem(atPath: data + "/" + file)[.posixPermissions] as? Int
            #expect(fileMode == 0o600, "\(file): \(String(fileMode ?? 0, radix: 8))")
        }
        // And a second node on the same UDP port cannot bind it.
        let samePort = try runCommand(Binaries.meshNode, ["run", "--listen", node.endpoint, "--data-dir", scratch.file("n3"),
                                                          "--control-socket", scratch.file("n3.sock")], timeout: 20)
        #expect(samePort.status != 0 && samePort.stderr.contains("cannot bind"), "\(samePort.stderr)")
    }
}
