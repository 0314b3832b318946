"""The app shell on top of the stages: the `tokenmeter` command line, the supervisor behind `tokenmeter up`, the
embedded broker runner, the benches and the chaos soak. It imports every stage; no stage imports it, and the
contract package `tokenmeter` imports neither."""
