import MeshDaemon

/// The node's TOML configuration file (docs/configuration.md), read as `mesh-node run --config` reads it.
enum ConfigFuzz {
    static func run(_ input: [UInt8]) {
        _ = try? NodeConfig.load(file: Fuzz.scratchFile(input, suffix: ".toml"))
    }

    /// The example configuration, and one that sets every key.
    static func seeds() -> [[UInt8]] {
        let every = """
            listen = "[::1]:4460"
            key = "node.key"
            wallets = ["a.key", "/b.key"]
            passphrase_file = "pass"
            data_dir = "data"
            control_socket = "/tmp/c.sock"
            peers = ["0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf@192.0.2.10:4460", "host:1"]
            bootstrap = ["192.0.2.20:4460"]
            advertise = ["203.0.113.7:4460"]
            auto_answer = "record"
            record_dir = "rec"
            bitrate = 16000
            vad = true
            denoise = true
            redundancy = "on"
            """
        return [Fuzz.contents(Fuzz.repository.path + "/Configs/node.toml"), Array(every.utf8)]
    }
}
