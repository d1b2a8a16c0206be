"""The AWS IoT Device Shadow service: MQTT protocol and the REST view of device shadows."""
